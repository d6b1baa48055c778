"""Where a request's time goes: histograms of the time to get a connection and of the query, for /stats.

Every target family reports the same two histograms in /stats, `"acquire_ms"` (pool wait or connect) and
`"query_ms"`, each `{"<bucket>": count}` over the process's life, bucketed by `fine_bucket` (targets/contract.py;
the harness diffs two snapshots to get the measured window). Counting is a dict update under an uncontended lock: the
edge strategies record from their isolate threads.
"""

from __future__ import annotations

import threading

from targets.contract import fine_bucket


class Histogram:
    """Counts of durations in fine buckets of milliseconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[float, int] = {}

    def add(self, seconds: float) -> None:
        bucket = fine_bucket(seconds * 1000)
        with self._lock:
            self._counts[bucket] = self._counts.get(bucket, 0) + 1

    def as_dict(self) -> dict[str, int]:
        """JSON-ready: `{"0.4": 12, "48": 3}` (integral buckets without a decimal point)."""
        with self._lock:
            items = sorted(self._counts.items())
        return {(f"{b:g}" if b < 10 else str(int(b))): n for b, n in items}


# One pair per process, as the connection counter in drivers.py: every strategy is measured alike.
ACQUIRE = Histogram()
QUERY = Histogram()
