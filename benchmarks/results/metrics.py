"""The metrics registry, as ann-benchmarks keeps its own (plotting/metrics.py): a name → what it means, how it is
computed from a run's cells (summary.csv), its unit, and whether higher or lower is better.

Findings and figures read numbers through `estimate(run, name, scenario, target)`: the median over the valid
repeats of a cell group on the scenario's reference connection path, with its bootstrap interval. A setting
of the run that a sentence quotes (workers, pool_max, the slots of the role) is a metric too, with no better
direction, so it comes from the run's files like any measured number.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from benchmarks.results.load import RunData
from benchmarks.results.path import on_reference_path
from benchmarks.results.stats import Estimate

# How a limit on a metric reads (a threshold `latency_p99_ms<50`, a comparison's `rps<-10%`).
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class Metric:
    label: str  # the short name sentences and axes use
    unit: str
    better: str | None  # HIGHER, LOWER, or None for a setting or a yes/no
    description: str
    compute: Callable[[pd.DataFrame], pd.Series] | None = None  # per cell; None: the summary column of its name
    # A share or a count that another machine of the same kind measures alike (sessions per request,
    # connections, the share of requests failed, whether something happened); False: a time, a rate, or a
    # count that grows with the rate (failed requests) on this machine. docs/trust.md measured both.
    travels: bool = False

    def values(self, name: str, cells: pd.DataFrame) -> pd.Series:
        """The metric of each cell (a row of summary.csv); empty when the run has no such column."""
        if self.compute is not None:
            return self.compute(cells)
        return cells[name] if name in cells else pd.Series(dtype=float)


def _served(cells: pd.DataFrame) -> pd.Series:
    return cells["rps"] * (1 - cells["error_rate"].fillna(0))


METRICS: dict[str, Metric] = {
    "rps": Metric("throughput", "req/s", HIGHER, "requests answered per second, failures included"),
    "served_rps": Metric("served", "req/s", HIGHER, "successful requests per second: rps × (1 − error_rate)", _served),
    "latency_p50_ms": Metric("p50", "ms", LOWER, "median response time (closed loop: from the send)"),
    "latency_p99_ms": Metric("p99", "ms", LOWER, "99th percentile response time"),
    "latency_max_ms": Metric("slowest request", "ms", LOWER, "the longest response time"),
    "error_rate": Metric("error rate", "", LOWER, "share of requests that failed", travels=True),
    "errors_53300": Metric("53300 errors", "", LOWER, "requests failed with SQLSTATE 53300 (too many connections)"),
    "errors_after_action": Metric("failed requests after the action", "", LOWER, "failures after the fault"),
    "conn_peak": Metric(
        "peak connections", "", LOWER, "the most connections PostgreSQL showed for the target", travels=True
    ),
    "sessions_per_request": Metric(
        "sessions per request", "", LOWER, "new PostgreSQL sessions per request", travels=True
    ),
    "acquire_p50_ms": Metric("wait for a connection, p50", "ms", LOWER, "time to get a connection (pool or new)"),
    "acquire_p99_ms": Metric("wait for a connection, p99", "ms", LOWER, "time to get a connection, 99th percentile"),
    "query_p50_ms": Metric("query, p50", "ms", LOWER, "time of the query on its connection"),
    "time_to_ready_s": Metric("time to ready", "s", LOWER, "from the start of the process to /ready"),
    "first_request_ms": Metric("first request", "ms", LOWER, "the first /db request after ready"),
    "first10_p50_ms": Metric("p50 of the first 10 requests", "ms", LOWER, "median of the first requests"),
    "outage_s": Metric("outage", "s", LOWER, "seconds without a successful request after the fault"),
    "recovery_s": Metric("recovered after", "s", LOWER, "from the database's return to the first success"),
    "recovered": Metric(
        "recovered", "", HIGHER, "the target served again after the fault (share of repeats)", travels=True
    ),
    "shutdown_logged": Metric(
        "exit hook reached the database", "", HIGHER, "the exit hook wrote its row", travels=True
    ),
    "release_s": Metric("connections released after", "s", LOWER, "from the signal to no connection left"),
    "db_cpu_ms_per_request": Metric(
        "database CPU per request", "ms", LOWER, "PostgreSQL's CPU time per request, its ended sessions' included"
    ),
    "db_backend_mb": Metric(
        "memory per backend", "MB", LOWER, "mean proportional set size of the target's PostgreSQL backends"
    ),
    "hang_s": Metric("longest hang", "s", LOWER, "the longest a request took to fail after the idle gap"),
    "orphans": Metric(
        "orphaned sessions", "", LOWER, "sessions PostgreSQL still held after the target exited", travels=True
    ),
    "dropped_packets": Metric("packets dropped", "", None, "packets of forgotten flows the middlebox dropped"),
    "instances_refused": Metric(
        "new instances refused", "", LOWER, "new instances of the target PostgreSQL refused (53300)", travels=True
    ),
    # settings of the run, as its cells record them
    "workers": Metric("workers", "", None, "target processes per target", travels=True),
    "pool_max": Metric("pool_max", "", None, "the pool's maximum size per process", travels=True),
    "conn_wanted": Metric("connections wanted", "", None, "workers × pool_max: what the pools may open", travels=True),
    "conn_slots": Metric("slots", "", None, "connections the role may open under max_connections", travels=True),
    "users": Metric("users", "", None, "concurrent users of the closed loop", travels=True),
}


def travels(name: str) -> bool:
    """Whether a metric's value carries to another machine of the same kind (False for a capacity.csv column)."""
    return name in METRICS and METRICS[name].travels


def label(name: str) -> tuple[str, str]:
    """(short name, unit) of a metric."""
    m = METRICS[name]
    return m.label, m.unit


def estimate(run: RunData, name: str, scenario: str, target: str, valid: bool = True) -> Estimate | None:
    """The valid cells of `target` in `scenario` (reference connection path): median of the metric, interval.
    `valid=False`: the cells set aside instead (their reason is the caller's to say)."""
    s = on_reference_path(run.summary[run.summary["valid"] == valid])
    rows = s[(s["scenario"] == scenario) & (s["target"] == target)]
    return Estimate.of(METRICS[name].values(name, rows))


def first_estimate(run: RunData, name: str, scenario: str, targets: list[str]) -> tuple[str, Estimate] | None:
    """The first of `targets` that has the metric in `scenario`, with its estimate."""
    for t in targets:
        e = estimate(run, name, scenario, t)
        if e is not None:
            return t, e
    return None
