"""The results schema (one place) and the arithmetic that turns one cell's raw data into its summary row.

Pure functions over plain data, so they are unit-tested without a database.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

# The bucketing of every histogram (Locust's and the targets' /stats), re-exported for the locustfile.
from targets.contract import fine_bucket as fine_bucket

SCHEMA_VERSION = 1
# timeseries.csv `event` of a target that exited on its own during a capped load (an outcome, not a failure)
TARGET_EXITED = "target-exited"

# Columns only some scenarios fill (cold start, faults, lifecycle); the report draws them per scenario.
FAULT_COLUMNS = [
    "first_request_ms", "first10_p50_ms", "outage_s", "errors_after_action", "recovery_s", "recovered",
    "errors_53300", "shutdown_logged", "release_s", "hang_s", "orphans", "dropped_packets", "instances_refused",
]  # fmt: skip

# Columns added within schema version 1: a run folder written before them reads with them blank.
ADDED_COLUMNS = [
    "hang_s", "orphans", "dropped_packets", "db_cpu_pct", "db_cpu_ms_per_request", "db_backend_mb", "instances_refused",
]  # fmt: skip

# The connection path of a cell (RTT added in ms, TLS, where PgBouncer sits); in summary, timeseries and baseline.
PATH_COLUMNS = ["rtt_ms", "tls", "pooler"]

# Open-model load (arrival, capacity): closed cells fill only load_model. Latencies of open cells count from
# when each request was due (benchmarks/load/arrival.py).
OPEN_COLUMNS = ["load_model", "offered_rps", "dropped", "late", "senders_peak"]

# capacity.csv: one row per capacity cell (a target's search), in README's "Results files".
CAPACITY_COLUMNS = [
    "cell_id", "target", "strategy", "driver", "repeat", "slo_ms", "sustainable_rps", "rps", "p99_ms",
    "failed_at_rps", "reason", "steps", "search_s", "budget_s", "step_log",
]  # fmt: skip

# summary.csv: one row per cell. README's "Results files" documents each column (a test checks it).
SUMMARY_COLUMNS = [
    "cell_id", "scenario", "target", "strategy", "driver", *PATH_COLUMNS,
    "users", "repeat", "workers", "params", "pool_max",
    "started_at", "measure_s", "requests", "failures", "error_rate", "rps", *OPEN_COLUMNS,
    "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms", "latency_mean_ms",
    "acquire_p50_ms", "acquire_p99_ms", "query_p50_ms", "query_p99_ms",
    "conn_peak", "conn_mean", "conn_wanted", "conn_slots", "sessions_opened", "sessions_per_request", "errors",
    "time_to_ready_s", "target_rss_mb", "target_cpu_pct", "locust_cpu_pct", "db_cpu_pct", "db_cpu_ms_per_request",
    "db_backend_mb",
    "locust_requests", "target_requests", "counts_agree", "target_exit",
    *FAULT_COLUMNS,
    "valid", "invalid_reason",
]  # fmt: skip

# timeseries.csv: one row per second per cell.
TIMESERIES_COLUMNS = [
    "cell_id", "scenario", "target", *PATH_COLUMNS, "users_level", "repeat", "t", "phase", "users", "rps", "failures",
    "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "conn_total", "conn_active", "conn_idle",
    "sessions_opened", "db_up", "event",
]  # fmt: skip

# baseline.csv: pgbench (and wrk) on the embedded stack, one row per tool and mode.
# With -C and one client, pgbench's connect time per RTT gives the round trips a new connection costs (the slope).
BASELINE_COLUMNS = [
    "tool", "mode", *PATH_COLUMNS, "clients", "duration_s", "tps", "latency_mean_ms", "connect_ms", "round_trips",
    "db_cpu_ms_per_tx", "note",
]  # fmt: skip

PERCENTILES = {"latency_p50_ms": 0.5, "latency_p90_ms": 0.9, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}
LOCUST_CPU_LIMIT = 90.0


def histogram_percentile(hist: dict[float, int], count: int, q: float) -> float:
    """Locust's percentile rule (locust.stats.calculate_response_time_percentile) on a float-keyed histogram.

    Restated here because importing locust monkey-patches the whole process with gevent, which the runner,
    with its sampler thread, must not be.
    """
    keep = int(count * q)
    seen = 0
    for bucket in sorted(hist, reverse=True):
        seen += hist[bucket]
        if count - seen <= keep:
            return bucket
    return 0.0


def latency_stats(response_times: dict[str, int] | dict[float, int]) -> dict[str, float | None]:
    """Percentiles from Locust's response-time histogram (bucket ms -> count), at the buckets' resolution."""
    hist = {float(k): int(v) for k, v in response_times.items()}
    n = sum(hist.values())
    out: dict[str, float | None] = {}
    for col, q in PERCENTILES.items():
        out[col] = float(histogram_percentile(hist, n, q)) if n else None
    out["latency_max_ms"] = max(hist) if hist else None
    return out


def rate(num: float, den: float) -> float | None:
    return num / den if den else None


def counts_agree(
    locust: int, target: int, sessions: int | None, users: int, per_request: bool, failures: int = 0
) -> bool:
    """Do the three request counts agree?

    Locust and the target may differ by the requests in flight when Locust stops its users (at most one per
    user, plus slack); a target that opens a session per request must show at least one session per request
    that succeeded (a connection refused with 53300 never became a session).
    """
    slack = users + 2
    if abs(locust - target) > slack:
        return False
    if per_request and (sessions is None or sessions < target - failures - slack):
        return False
    return True


def per_second(
    history: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    app_name: str,
    t0: float,
    events: list[tuple[float, str]],
) -> list[dict[str, Any]]:
    """Join Locust's per-second rows with the sampler's polls (max connections per second, sessions delta)."""
    by_sec: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        by_sec[math.floor(s["t"] - t0)].append(s)
    ev: dict[int, list[str]] = defaultdict(list)
    for t, name in events:
        ev[math.floor(t - t0)].append(name)
    rows = []
    last_sessions: int | None = None
    seconds = sorted({math.floor(h["t"] - t0) - 1 for h in history} | set(by_sec) | set(ev))
    hist_by_sec = {math.floor(h["t"] - t0) - 1: h for h in history}  # a history row covers the second before
    for sec in seconds:
        h = hist_by_sec.get(sec, {})
        polls = by_sec.get(sec, [])
        conns = [p["connections"].get(app_name, {}) for p in polls if p["db_up"]]
        sessions = [p["sessions"] for p in polls if p["sessions"] is not None]
        opened = None
        if sessions:
            if last_sessions is not None:
                opened = sessions[-1] - last_sessions
            last_sessions = sessions[-1]
        rows.append(
            {
                "t": sec,
                "phase": h.get("phase"),
                "users": h.get("users"),
                "rps": h.get("requests"),
                "failures": h.get("failures"),
                "latency_p50_ms": h.get("p50"),
                "latency_p95_ms": h.get("p95"),
                "latency_p99_ms": h.get("p99"),
                "conn_total": max((c.get("total", 0) for c in conns), default=None),
                "conn_active": max((c.get("active", 0) for c in conns), default=None),
                "conn_idle": max((c.get("idle", 0) for c in conns), default=None),
                "sessions_opened": opened,
                "db_up": all(p["db_up"] for p in polls) if polls else None,
                "event": ";".join(ev.get(sec, [])) or None,
            }
        )
    return rows


def connection_figures(samples: list[dict[str, Any]], app_name: str, start: float, end: float) -> dict[str, Any]:
    """Peak over the whole load and mean over [start, end] of the target's PostgreSQL connections."""
    totals = [s["connections"].get(app_name, {}).get("total", 0) for s in samples if s["db_up"]]
    window = [
        s["connections"].get(app_name, {}).get("total", 0) for s in samples if s["db_up"] and start <= s["t"] <= end
    ]
    return {
        "conn_peak": max(totals) if totals else None,
        "conn_mean": sum(window) / len(window) if window else None,
    }


def errors_json(errors: dict[str, int]) -> str:
    """Errors by class, as a JSON object (a CSV cell); Locust names failures by the 503 body's error class."""
    return json.dumps(dict(sorted(errors.items(), key=lambda kv: -kv[1])), separators=(",", ":"))


def db_cpu_per_request(cpu_s: float | None, window: list[Any], requests: int, measure_s: float) -> float | None:
    """PostgreSQL's CPU milliseconds per request of the measured window: its CPU over the samples that span the
    window, scaled to the whole window, divided by the window's requests."""
    if cpu_s is None or not requests or len(window) < 2 or measure_s <= 0:
        return None
    sampled = window[-1].t - window[0].t
    if sampled <= 0:
        return None
    return round(cpu_s * 1000 * (measure_s / sampled) / requests, 4)
