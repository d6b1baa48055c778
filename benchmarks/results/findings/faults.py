"""The fault scenarios in words: per scenario, one sentence giving each target's figures from the metrics that
tell that scenario's story (FAULT_COLUMNS, shared with the fault figures)."""

from __future__ import annotations

import pandas as pd

from benchmarks.results import fmt
from benchmarks.results.load import BOOL_COLUMNS, MAIN_SCENARIO, RunData
from benchmarks.results.metrics import label
from benchmarks.results.path import path_scenarios
from benchmarks.results.stats import SWEPT_SCENARIOS
from benchmarks.results.summary import FAULT_COLUMNS as SCHEMA_FAULT_COLUMNS

# The fault scenarios and the metrics that tell their story, in the order the report shows them.
FAULT_COLUMNS: dict[str, list[str]] = {
    "cold-start": ["time_to_ready_s", "first_request_ms", "first10_p50_ms", "error_rate"],
    "db-restart": ["outage_s", "errors_after_action", "recovery_s", "recovered"],
    "conn-cap": ["conn_peak", "errors_53300", "error_rate"],
    "idle-timeout": ["errors_after_action", "recovery_s", "recovered"],
    "shutdown": ["shutdown_logged", "release_s", "errors_after_action"],
    "shutdown-kill": ["shutdown_logged", "release_s", "errors_after_action"],
    "killed-backends": ["errors_after_action", "outage_s", "recovery_s", "recovered"],
    "pooler-restart": ["errors_after_action", "outage_s", "recovery_s", "recovered"],
    "pooler-pause": ["errors_after_action", "latency_max_ms", "recovered"],
    "frozen": ["release_s", "instances_refused", "errors_after_action", "recovery_s", "recovered"],
}
# The failures production connections meet: each drawn as a timeline too (figures/failures.png).
FAILURE_SCENARIOS = ["silent-drop", "killed-backends", "pooler-restart", "pooler-pause", "frozen"]
# For a scenario not listed above: whichever of these it filled.
GENERIC_FAULT_COLUMNS = ["time_to_ready_s", *SCHEMA_FAULT_COLUMNS]
# Scenarios told elsewhere: the load scenarios' own figures.
LOAD_SCENARIOS = (MAIN_SCENARIO, "spike")


def _target_parts(scenario: str, rows: pd.DataFrame) -> list[str]:
    med = rows.median(numeric_only=True)
    parts = []
    for col in FAULT_COLUMNS.get(scenario, GENERIC_FAULT_COLUMNS):
        if col in BOOL_COLUMNS:
            vals = rows[col].dropna()
            if len(vals):
                parts.append(f"{label(col)[0]}: {'yes' if vals.all() else 'no'}")
        elif col == "error_rate" and pd.notna(med[col]):
            parts.append(f"{med[col]:.1%} of requests failed")
        elif col in med and pd.notna(med[col]):
            name, unit = label(col)
            parts.append(f"{name} {fmt.num(med[col], unit)}")
    return parts


def sentences(run: RunData) -> list[str]:
    """One sentence per fault scenario the run has, one clause per target, from whichever fault metrics it filled."""
    out = []
    s = run.summary[run.summary["valid"]]
    own_figures = path_scenarios(run)
    for scenario, g in s.groupby("scenario", sort=False):
        if scenario in LOAD_SCENARIOS or scenario in SWEPT_SCENARIOS or scenario in own_figures:
            continue
        by_target = []
        for target, rows in g.groupby("target", sort=False):
            parts = _target_parts(str(scenario), rows)
            if parts:
                by_target.append(f"{target}: {', '.join(parts)}")
        if by_target:
            out.append(f"{scenario}: " + "; ".join(by_target) + ".")
    return out
