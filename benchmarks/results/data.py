"""What the report reads, in one namespace: the notebook (notebooks/report.ipynb) and the tests import it as R.

Nothing is defined here; each name lives in the module of its job:
- load: the run folder into typed dataframes (`load_run`, `newest_run`, `RunData`);
- stats: medians over repeats, bootstrap intervals and the tables built from them (`findings` is the table of
  each target at its highest valid load);
- path: the connection path (RTT, TLS, where PgBouncer sits);
- fmt: how a number is written;
- metrics: the metrics registry (name → computation, unit, better direction);
- findings: the sentences, one module per question group; questions: the answers table.
"""

from __future__ import annotations

from benchmarks.results.findings import sentences
from benchmarks.results.findings.capacity import open_sentences, slow_work_sentences
from benchmarks.results.findings.faults import FAILURE_SCENARIOS, FAULT_COLUMNS, GENERIC_FAULT_COLUMNS
from benchmarks.results.findings.frameworks import FRAMEWORK_FAMILIES
from benchmarks.results.findings.pool_size import at_distance as pool_size_at_distance
from benchmarks.results.findings.pool_size import sentences as pool_size_sentences
from benchmarks.results.findings.pooler import conn_cap_sentences, distance_sentences
from benchmarks.results.fmt import errors_text, in_ms, ms_text, num, pct, per_request_text, ratio_text
from benchmarks.results.load import (
    BOOL_COLUMNS,
    MAIN_SCENARIO,
    OPEN_SCENARIO,
    RunData,
    family_of,
    first_param,
    load_run,
    newest_run,
    read_capacity,
    with_params,
)
from benchmarks.results.metrics import METRICS, estimate, label
from benchmarks.results.path import (
    connect_round_trips,
    distance_aggregate,
    on_reference_path,
    path_label,
    path_scenarios,
    reference_baseline,
    round_trips_per_request,
)
from benchmarks.results.stats import (
    SWEPT_SCENARIOS,
    Estimate,
    aggregate,
    bootstrap_ci,
    invalid_cells,
    merge_errors,
    open_load,
    plateau,
    sweep_aggregate,
    time_split,
    within_noise,
)
from benchmarks.results.stats import per_target_table as findings

__all__ = [
    "BOOL_COLUMNS",
    "FAILURE_SCENARIOS",
    "FAULT_COLUMNS",
    "GENERIC_FAULT_COLUMNS",
    "MAIN_SCENARIO",
    "METRICS",
    "OPEN_SCENARIO",
    "SWEPT_SCENARIOS",
    "Estimate",
    "RunData",
    "aggregate",
    "bootstrap_ci",
    "conn_cap_sentences",
    "connect_round_trips",
    "distance_aggregate",
    "distance_sentences",
    "errors_text",
    "estimate",
    "family_of",
    "FRAMEWORK_FAMILIES",
    "findings",
    "first_param",
    "in_ms",
    "invalid_cells",
    "label",
    "load_run",
    "merge_errors",
    "ms_text",
    "newest_run",
    "num",
    "on_reference_path",
    "open_load",
    "open_sentences",
    "path_label",
    "path_scenarios",
    "pct",
    "per_request_text",
    "plateau",
    "pool_size_at_distance",
    "pool_size_sentences",
    "ratio_text",
    "read_capacity",
    "reference_baseline",
    "round_trips_per_request",
    "sentences",
    "slow_work_sentences",
    "sweep_aggregate",
    "time_split",
    "with_params",
    "within_noise",
]
