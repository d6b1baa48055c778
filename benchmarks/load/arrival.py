"""Open-model load, the arithmetic: when requests are due, what rate a stage plan asks for, whether a rate
step kept its SLO, and which rate the capacity search tries next.

Pure functions and small classes without Locust (importing Locust patches the process with gevent), shared by
the locustfile (which sends the requests), the scenario parser and the runner, and unit-tested on their own.

Why by hand: Locust's users are closed loops (a user sends its next request when the last one answered), so a
slow target receives fewer requests and its percentiles leave out the time requests would have waited
(coordinated omission). Requests here are due at times drawn from the rate alone, as k6's arrival-rate
executors, wrk2 and `pgbench --rate` schedule them, and each one's latency counts from when it was due.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

ARRIVALS = ("poisson", "uniform")
LATE_S = 0.001  # a request sent more than this after it was due is "late"
MAX_ERROR = 0.01  # a capacity step fails at this share of failed or dropped requests


def gap(rate: float, arrival: str, rng: random.Random) -> float:
    """Seconds from one due time to the next at `rate` per second: fixed, or exponential (a Poisson process)."""
    return rng.expovariate(rate) if arrival == "poisson" else 1.0 / rate


def rate_at(stages: list[dict[str, Any]], elapsed: float) -> float | None:
    """The rate (requests/s) a stage plan asks for `elapsed` seconds after the start; None once it has ended.

    A stage is {"duration": s, "rps": r}; with "ramp": true the rate goes linearly from the previous stage's
    rate to r over the stage (k6's ramping-arrival-rate), otherwise it holds r.
    """
    before = 0.0
    for st in stages:
        rps, duration = float(st["rps"]), float(st["duration"])
        if elapsed < duration:
            return before + (rps - before) * elapsed / duration if st.get("ramp") else rps
        elapsed -= duration
        before = rps
    return None


@dataclass
class Step:
    """One rate step of a capacity search, measured over its window (warm-up excluded)."""

    rate: float
    seconds: float
    scheduled: int
    requests: int
    failures: int
    dropped: int
    late: int
    p99_ms: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def verdict(step: Step, slo_ms: float, max_error: float = MAX_ERROR) -> str:
    """Why a step did not hold the SLO, or "" when it did: p99 (from the due time) at most `slo_ms`, failed
    and dropped requests each under `max_error` of those due, and completions within 10 % of the requests due."""
    if not step.requests:
        return "no request completed"
    due = max(step.scheduled, step.requests)
    if step.failures / step.requests >= max_error:
        return f"errors {step.failures / step.requests:.1%}"
    if step.dropped / due >= max_error:
        return f"dropped {step.dropped / due:.1%}"
    if step.p99_ms is None or step.p99_ms > slo_ms:
        return f"p99 {step.p99_ms:.0f} ms > {slo_ms:g} ms"
    if step.requests + 2 < 0.9 * step.scheduled:  # a backlog building up (counted against the draws, not the rate)
        return f"completed {step.requests} of {step.scheduled} due"
    return ""


@dataclass
class Search:
    """The highest rate that holds the SLO: grow the rate by `growth` while steps pass, then bisect between the
    best pass and the lowest failure until they are within `precision` of each other. When the first step
    fails, step down by `growth` (at most to `start` / growth**3) until one passes."""

    start: float
    growth: float = 2.0
    precision: float = 0.1
    max_rps: float = 10_000.0
    passed: float = 0.0
    failed: float = math.inf
    tried: int = 0

    def record(self, rate: float, ok: bool) -> None:
        self.tried += 1
        if ok:
            self.passed = max(self.passed, rate)
        else:
            self.failed = min(self.failed, rate)

    def next(self) -> float | None:
        if not self.tried:
            return float(self.start)
        if math.isinf(self.failed):  # everything passed so far: grow
            if self.passed >= self.max_rps:
                return None
            return float(min(round(self.passed * self.growth), self.max_rps))
        if not self.passed:  # everything failed so far: step down
            rate = round(self.failed / self.growth)
            return float(rate) if rate >= max(1.0, self.start / self.growth**3) else None
        if (self.failed - self.passed) / self.passed <= self.precision:
            return None
        rate = round((self.passed + self.failed) / 2)
        return float(rate) if self.passed < rate < self.failed else None


# -- the run's view: summary figures of an open cell, a capacity search's result ---------------------------
ARRIVAL_PREFIX = "arrival-"  # Locust user class of a target's open-model load: arrival-<target id>


def open_columns(final: dict[str, Any], is_open: bool, offered: float | None) -> dict[str, Any]:
    """The summary's open-model columns from the locustfile's final.json (closed cells: only load_model)."""
    if not is_open:
        return {"load_model": "closed"}
    counts = final.get("open") or {}
    return {
        "load_model": "open",
        "offered_rps": offered,
        "dropped": counts.get("dropped"),
        "late": counts.get("late"),
        "senders_peak": counts.get("senders_peak"),
    }


def capacity_result(final: dict[str, Any], cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A capacity cell's final.json narrowed to its sustainable step (the highest rate that passed, else the
    first step), so the summary row describes that rate; and the cell's capacity.csv row."""
    search = final.get("search") or {}
    steps = sorted(search.get("steps") or [], key=lambda s: s["rate"])
    passed = [s for s in steps if s["ok"]]
    best = passed[-1] if passed else (steps[0] if steps else None)
    above = [s for s in steps if not s["ok"] and (not passed or s["rate"] > passed[-1]["rate"])]
    if above:
        reason = above[0]["reason"]
    elif not steps:
        reason = "no step completed"
    elif passed and passed[-1]["rate"] >= cfg["max_rps"]:
        reason = f"held up to max_rps {cfg['max_rps']:g}"
    else:
        reason = "budget spent before a step failed"
    row = {
        "slo_ms": cfg["slo_ms"],
        "sustainable_rps": passed[-1]["rate"] if passed else 0,
        "rps": round(passed[-1]["rps"], 1) if passed else None,
        "p99_ms": passed[-1]["p99_ms"] if passed else None,
        "failed_at_rps": above[0]["rate"] if above else None,
        "reason": reason,
        "steps": len(steps),
        "search_s": round(search["search_s"], 2) if search.get("search_s") is not None else None,
        "budget_s": cfg["budget"],
        "step_log": json.dumps([[s["rate"], round(s["rps"], 1), s["p99_ms"], s["reason"] or "ok"] for s in steps]),
    }
    if best is None:
        return final, row
    times = best["response_times"]
    narrowed = {
        **final,
        "measure_start": best["start"],
        "stopped": best["end"],
        "requests": best["requests"],
        "failures": best["failures"],
        "response_times": times,
        "total_response_time": sum(float(k) * v for k, v in times.items()),
        "errors": best.get("errors") or {},
        "open": {"dropped": best["dropped"], "late": best["late"], "senders_peak": None},
    }
    return narrowed, row
