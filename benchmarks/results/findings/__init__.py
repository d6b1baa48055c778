"""The report's findings, one module per question group; each reads its numbers from the metrics layer.

- overview: repeats, the throughput range, failures, peak connections, invalid cells
- cost: what a connection costs (per request against a pool; pgbench with and without -C)
- shared_client: when a shared global client breaks
- lazy_eager: lazy or eager connect
- leaks: a client per call never closed
- pooler: replicas × pool against the cap, PgBouncer, the connection path
- hyperdrive: a pooler next to the Worker against its client per request straight across the distance
- shutdown: SIGTERM and SIGKILL
- pool_size: how big a pool should be
- capacity: the open model, the capacity search and slow work
- faults: every fault scenario in one sentence each
- silent_drop: connections a middlebox drops without a word, and the settings that survive it
- thresholds: the run's --threshold checks, held or breached by which cells

`questions.py` maps each question to its group's answer; `sentences(run)` is the appendix, every finding.
"""

from __future__ import annotations

from benchmarks.results.findings import (
    capacity,
    cost,
    faults,
    overview,
    pool_size,
    pooler,
    silent_drop,
    thresholds,
)
from benchmarks.results.load import RunData
from benchmarks.results.stats import main_aggregate, per_target_table


def sentences(run: RunData) -> list[str]:
    """The report's findings as sentences, every number computed from the run."""
    table = per_target_table(run)
    ok = table.dropna(subset=["rps"])
    clean = ok[ok["error_rate"] == 0]
    out = [overview.repeats_sentence(run)]
    out += overview.throughput_range(clean)
    out += cost.comparisons(run, main_aggregate(run))
    out += cost.session_sentences(ok)
    out += overview.failure_sentences(ok, clean)
    out += overview.connections_sentence(run, ok)
    out += cost.baseline_sentences(run, ok)
    out += faults.sentences(run) + silent_drop.sentences(run)
    out += pooler.conn_cap_sentences(run) + pool_size.sentences(run) + capacity.slow_work_sentences(run)
    out += overview.invalid_sentence(run)
    out += thresholds.sentences(run)
    return out
