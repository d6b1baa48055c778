"""The target's own view of a cell: its /stats over the measured window, and what its settings ask of PostgreSQL.

A target's /stats histograms (`acquire_ms`, `query_ms`; targets/timing.py) count from the process's start. The
measured window is their difference between two snapshots: one taken when Locust resets its statistics after
the warm-up (the locustfile writes `measure_start`; without a warm-up, the snapshot taken before the load), one
after the load. With several target workers the two snapshots may come from different processes; then the
last one is used alone (warm-up included), as the README says.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from benchmarks.results import summary as S

TIMING_KEYS = {"acquire": "acquire_ms", "query": "query_ms"}


def get_stats(url: str) -> dict[str, Any] | None:
    try:
        return httpx.get(f"{url}/stats", timeout=5.0).json()
    except (httpx.HTTPError, ValueError):
        return None


class WindowStart:
    """/stats before the load, replaced by /stats at the end of the warm-up when the locustfile marks it."""

    def __init__(self, url: str, locust_out: Path) -> None:
        self.url = url
        self.stats = get_stats(url)
        self._mark = locust_out / "measure_start"
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            if self._mark.exists():
                self.stats = get_stats(self.url) or self.stats
                return

    def stop(self) -> dict[str, Any] | None:
        self._done.set()
        self._thread.join(10)
        return self.stats


def window_histogram(before: dict[str, Any] | None, after: dict[str, Any] | None, key: str) -> dict[float, int]:
    """after - before of one /stats histogram (after alone when the snapshots come from different processes)."""
    hist = {float(k): int(v) for k, v in ((after or {}).get(key) or {}).items()}
    if before and after and before.get("pid") == after.get("pid"):
        for k, v in (before.get(key) or {}).items():
            hist[float(k)] = hist.get(float(k), 0) - int(v)
    return {k: v for k, v in hist.items() if v > 0}


def timing_columns(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, float | None]:
    """acquire_p50_ms, acquire_p99_ms, query_p50_ms, query_p99_ms of the measured window."""
    out: dict[str, float | None] = {}
    for name, key in TIMING_KEYS.items():
        hist = window_histogram(before, after, key)
        n = sum(hist.values())
        for q in (50, 99):
            out[f"{name}_p{q}_ms"] = S.histogram_percentile(hist, n, q / 100) if n else None
    return out


def conn_wanted(workers: int, *snapshots: dict[str, Any] | None) -> int | None:
    """Connections the target's pools may open: workers x the pool maximum its /stats reports (None without a pool)."""
    for stats in snapshots:
        pool_max = ((stats or {}).get("pool") or {}).get("pool_max")
        if pool_max:
            return workers * int(pool_max)
    return None


def conn_slots(mon: Any) -> int:
    """Connections a non-superuser role may open: max_connections minus the reserved slots (PostgreSQL 16's
    reserved_connections too, where the server has it)."""
    rows = mon.execute(
        "SELECT name, setting::int FROM pg_settings"
        " WHERE name IN ('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
    ).fetchall()
    s = dict(rows)
    return s["max_connections"] - s.get("superuser_reserved_connections", 0) - s.get("reserved_connections", 0)
