"""What a Locust process records beyond Locust's own statistics, and the files a `connbench run` cell reads.

- Outcomes per 100 ms of completion time, over the whole run (warm-up included): {"ok": n, "<ErrorClass>": n},
  the SQLSTATEs of the 503 bodies, and (in cells that signal the target) failures by send time to 0.1 ms and
  completion to 10 ms, so a request in flight at the signal is known even when geventhttpclient re-sent it.
  Fault scenarios time outages and recoveries with these (benchmarks/run/faults.py).
- The open model's counts: requests due, dropped (every sender busy) and late (sent > 1 ms after due), and the
  most senders in flight at once. Workers send theirs to the master with each stats report and start again
  from zero; the master, or a single process, keeps the totals.
- `write_history` (one line per second to history.jsonl, with the warm-up reset) and `write_final` (the
  measured window to final.json) write Locust's stats objects at full resolution.

One Recorder per Locust process (`RECORDER`): Locust's users and event listeners of one process share it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust.stats import calculate_response_time_percentile, diff_response_time_dicts

from benchmarks.load.plan import LoadPlan

PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
OPEN_KEYS = ("scheduled", "dropped", "late")
# The outcome of a request still unanswered when the load ended (its user stopped mid-request).
UNANSWERED = "Unanswered"


def _zero_open() -> dict[str, int]:
    return {"scheduled": 0, "dropped": 0, "late": 0, "senders_peak": 0}


@dataclass
class Recorder:
    ticks: dict[int, dict[str, int]] = field(default_factory=dict)
    sqlstates: dict[int, dict[str, int]] = field(default_factory=dict)
    failure_spans: dict[tuple[int, int, str], int] = field(default_factory=dict)
    spans: bool = False  # record failure_spans (only where a signal's lost requests are counted)
    open: dict[str, int] = field(default_factory=_zero_open)
    warmup_requests: int = 0
    warmup_failures: int = 0
    stopped: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)  # the capacity search's steps
    search_s: float | None = None

    def outcome(self, outcome: str, sqlstate: str | None = None, sent: float | None = None) -> None:
        now = time.time()
        ds = int(now * 10)
        bucket = self.ticks.setdefault(ds, {})
        bucket[outcome] = bucket.get(outcome, 0) + 1
        if sqlstate:
            codes = self.sqlstates.setdefault(ds, {})
            codes[sqlstate] = codes.get(sqlstate, 0) + 1
        if sent is not None and self.spans:  # sent to 0.1 ms (a request lasts about 1 ms), failed to 10 ms
            key = (int(sent * 10_000), int(now * 100), outcome)
            self.failure_spans[key] = self.failure_spans.get(key, 0) + 1

    def take_open(self) -> dict[str, int]:
        """This process's open-model counts since the last call (a worker's report to the master)."""
        counts, self.open = self.open, _zero_open()
        return counts

    def add_open(self, counts: dict[str, int]) -> None:
        """A worker's counts, added on the master."""
        for key in OPEN_KEYS:
            self.open[key] += counts.get(key, 0)
        self.open["senders_peak"] = max(self.open["senders_peak"], counts.get("senders_peak", 0))


RECORDER = Recorder()


def errors_by_class(stats: Any) -> dict[str, int]:
    """Failures by the name given to resp.failure() (the target's error class), summed over entries."""
    out: dict[str, int] = {}
    for e in stats.errors.values():
        name = str(e.error)
        out[name] = out.get(name, 0) + e.occurrences
    return out


def _percentiles(times: dict, count: int) -> dict[str, float | None]:
    return {k: (calculate_response_time_percentile(times, count, q) if count else None) for k, q in PERCENTILES.items()}


def write_history(environment: Any, plan: LoadPlan, rec: Recorder = RECORDER) -> None:
    """Every second: users, requests and failures in that second and its latency percentiles. When the warm-up
    ends (mid-second too: a 0.5 s warm-up must not cost the window the rest of its second), Locust's statistics
    are reset and `measure_start` is written; that second's row adds the warm-up's part to what follows."""
    out = Path(plan.out)
    stats = environment.runner.stats
    prev_times: dict = {}
    prev_req = prev_fail = 0
    prev_open = dict(rec.open)
    carry = _Carry()
    reset_done = plan.warmup <= 0
    start = time.time()
    warm_end = start + plan.warmup
    tick = start
    with open(out / "history.jsonl", "a") as fh:
        while True:
            # the next whole second after the last row's (a late wake-up skips the seconds it missed)
            tick = max(tick + 1.0, start + math.floor(time.time() - start) + 1.0)
            if not reset_done and warm_end <= tick:
                gevent.sleep(max(0.0, warm_end - time.time()))
                total = stats.total
                times = dict(total.response_times)
                carry = _Carry(
                    warm_end - (tick - 1.0),
                    total.num_requests - prev_req,
                    total.num_failures - prev_fail,
                    diff_response_time_dicts(times, prev_times),
                    {k: rec.open[k] - prev_open[k] for k in OPEN_KEYS},
                )
                rec.warmup_requests = total.num_requests
                rec.warmup_failures = total.num_failures
                stats.reset_all()
                rec.open = _zero_open()
                reset_done = True
                prev_times, prev_req, prev_fail = {}, 0, 0
                prev_open = dict(rec.open)
                (out / "measure_start").write_text(repr(time.time()))
            gevent.sleep(max(0.0, tick - time.time()))
            total = stats.total
            times = dict(total.response_times)
            new_times = diff_response_time_dicts(times, prev_times)
            for bucket, n in carry.times.items():
                new_times[bucket] = new_times.get(bucket, 0) + n
            row = {
                "t": time.time(),
                "users": environment.runner.user_count,
                "requests": total.num_requests - prev_req + carry.requests,
                "failures": total.num_failures - prev_fail + carry.failures,
                "phase": "measure" if reset_done and carry.seconds < 0.5 else "warmup",  # most of the second
                **_percentiles(new_times, sum(new_times.values())),
                **{k: rec.open[k] - prev_open[k] + carry.open.get(k, 0) for k in OPEN_KEYS},
            }
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            prev_times, prev_req, prev_fail, prev_open = times, total.num_requests, total.num_failures, dict(rec.open)
            carry = _Carry()


@dataclass
class _Carry:
    """The warm-up's part of the second in which the statistics were reset."""

    seconds: float = 0.0
    requests: int = 0
    failures: int = 0
    times: dict = field(default_factory=dict)
    open: dict[str, int] = field(default_factory=dict)


def write_final(environment: Any, plan: LoadPlan, rec: Recorder = RECORDER) -> None:
    """The measured window's statistics and the recorder's counts, to final.json."""
    out = Path(plan.out)
    stats = environment.runner.stats
    total = stats.total
    measure_start = out / "measure_start"
    final = {
        "stopped": rec.stopped,
        "measure_start": float(measure_start.read_text()) if measure_start.exists() else None,
        "requests": total.num_requests,
        "failures": total.num_failures,
        "total_response_time": total.total_response_time,
        "max_response_time": total.max_response_time,
        "response_times": {str(k): v for k, v in total.response_times.items()},
        "errors": errors_by_class(stats),
        "open": dict(rec.open),
        "search": {"steps": rec.steps, "search_s": rec.search_s} if plan.capacity else None,
        "all_requests": rec.warmup_requests + total.num_requests,
        "all_failures": rec.warmup_failures + total.num_failures,
        "ticks": {str(k): v for k, v in sorted(rec.ticks.items())},
        "sqlstate_ticks": {str(k): v for k, v in sorted(rec.sqlstates.items())},
        "failure_spans_s": [  # [sent, failed, error, n]: times in seconds, floored to 0.1 ms and 10 ms
            [sent / 10_000, done / 100, error, n] for (sent, done, error), n in sorted(rec.failure_spans.items())
        ]
        if rec.spans
        else None,
    }
    (out / "final.json").write_text(json.dumps(final))
