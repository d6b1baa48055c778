"""The capacity search as it runs inside Locust: one rate step after another, each measured from Locust's own
totals, until benchmarks/load/arrival.py's Search has no next rate or the budget would be spent.

Each step paces its rate, lets `step_warmup` seconds pass (the backlog of a failed step drains), measures
`step_duration` seconds, and goes to steps.jsonl with its histogram, so the run can rebuild any step's figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gevent
from locust.stats import calculate_response_time_percentile, diff_response_time_dicts

from benchmarks.load import arrival as A
from benchmarks.load.plan import CapacitySearch
from benchmarks.load.recorder import RECORDER, Recorder, errors_by_class


class CapacityRun:
    """The search's state in the Locust process: the rate asked for now, and whether it has finished."""

    def __init__(self, cfg: CapacitySearch, rec: Recorder = RECORDER) -> None:
        self.cfg = cfg
        self.rec = rec
        self.rps = 0.0
        self.done = False

    def _snapshot(self, stats: Any) -> dict[str, Any]:
        total = stats.total
        return {"t": time.time(), "requests": total.num_requests, "failures": total.num_failures,
                "times": dict(total.response_times), "errors": errors_by_class(stats), **self.rec.open}  # fmt: skip

    def run(self, environment: Any, out: Path) -> None:
        cfg = self.cfg
        search = A.Search(cfg.start_rps, cfg.growth, cfg.precision, cfg.max_rps)
        stats = environment.runner.stats
        started = time.time()
        step_s = cfg.step_warmup + cfg.step_duration
        try:
            with open(out / "steps.jsonl", "a") as fh:
                while (rate := search.next()) is not None and time.time() - started + step_s <= cfg.budget:
                    self.rps = rate
                    gevent.sleep(cfg.step_warmup)
                    a = self._snapshot(stats)
                    gevent.sleep(cfg.step_duration)
                    b = self._snapshot(stats)
                    times = diff_response_time_dicts(b["times"], a["times"])
                    n = b["requests"] - a["requests"]
                    due, done, failed, dropped, late = (
                        b[k] - a[k] for k in ("scheduled", "requests", "failures", "dropped", "late")
                    )
                    p99 = calculate_response_time_percentile(times, n, 0.99) if n else None
                    step = A.Step(rate, b["t"] - a["t"], due, done, failed, dropped, late, p99)
                    reason = A.verdict(step, cfg.slo_ms, cfg.max_error)
                    search.record(rate, not reason)
                    errors = {k: c - a["errors"].get(k, 0) for k, c in b["errors"].items()}
                    record = {
                        **vars(step),
                        "rps": step.rps,
                        "start": a["t"],
                        "end": b["t"],
                        "ok": not reason,
                        "reason": reason,
                        "response_times": {str(k): v for k, v in times.items()},
                        "errors": {k: c for k, c in errors.items() if c > 0},
                    }
                    self.rec.steps.append(record)
                    fh.write(json.dumps(record) + "\n")
                    fh.flush()
        finally:
            self.rps = 0.0
            self.done = True
            self.rec.search_s = time.time() - started
