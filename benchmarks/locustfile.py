"""Locust load for the targets: one FastHttpUser class per target of the registry, each hitting GET /db.

- A failed request is named by the error class in the target's 503 body, so failures group by cause.
- Response times are bucketed at 0.1 ms below 10 ms (Locust's default buckets are whole milliseconds), by
  replacing `locust.stats.bucket_response_time`, Locust's documented hook for custom bucketing.
- Under `connbench run` (CONNBENCH_LOCUST_OUT set) a load shape follows the scenario's stages, statistics are
  reset after the warm-up, and Locust's own stats objects are written at full resolution: one line per
  second to history.jsonl and the measured window to final.json.
- In the web UI (`connbench up`, docker compose) each class's host comes from CONNBENCH_TARGET_URLS.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import gevent
import locust.runners
import locust.stats
from locust import FastHttpUser, LoadTestShape, constant, events, task
from locust.runners import WorkerRunner
from locust.stats import calculate_response_time_percentile, diff_response_time_dicts

from benchmarks.panel import parse_target_urls
from benchmarks.summary import fine_bucket
from targets.strategies import TARGETS

locust.stats.bucket_response_time = fine_bucket
# Workers report to the master every second instead of every 3 s, so short cells lose less at their end.
locust.runners.WORKER_REPORT_INTERVAL = 1.0


class TargetUser(FastHttpUser):
    """A closed-loop user: one /db request after another, no think time."""

    abstract = True
    wait_time = constant(0)
    target_id = ""
    network_timeout = 30.0
    connection_timeout = 10.0

    @task
    def db(self) -> None:
        sent = time.time()
        with self.client.get("/db", name="/db", catch_response=True) as resp:
            if resp.status_code == 200:
                resp.success()
                _tick("ok")
                return
            sqlstate = None
            try:
                body = resp.json()
                error = body.get("error") or f"HTTP {resp.status_code}"
                sqlstate = body.get("sqlstate")
            except Exception:
                error = f"HTTP {resp.status_code}" if resp.status_code else type(resp.error).__name__
            _tick(error, sqlstate, sent)
            resp.failure(error)


# Outcomes per 100 ms of completion time, over the whole run (warm-up included): {"ok": n, "<ErrorClass>": n},
# the SQLSTATEs of the 503 bodies, and failures by (sent, completed) in 10 ms units, so a request in flight at a
# fault is known even when geventhttpclient re-sent it on a new connection. Fault scenarios time outages and
# recoveries with these (benchmarks/faults.py).
TICKS: dict[int, dict[str, int]] = {}
SQLSTATES: dict[int, dict[str, int]] = {}
FAILURE_SPANS: dict[tuple[int, int, str], int] = {}


def _tick(outcome: str, sqlstate: str | None = None, sent: float | None = None) -> None:
    now = time.time()
    ds = int(now * 10)
    bucket = TICKS.setdefault(ds, {})
    bucket[outcome] = bucket.get(outcome, 0) + 1
    if sqlstate:
        codes = SQLSTATES.setdefault(ds, {})
        codes[sqlstate] = codes.get(sqlstate, 0) + 1
    if sent is not None:
        key = (int(sent * 100), int(now * 100), outcome)
        FAILURE_SPANS[key] = FAILURE_SPANS.get(key, 0) + 1


_urls = parse_target_urls(os.environ.get("CONNBENCH_TARGET_URLS"))
for _t in TARGETS.values():
    globals()[_t.id] = type(_t.id, (TargetUser,), {"target_id": _t.id, "host": _urls.get(_t.id)})


@events.init.add_listener
def _connbench_panel(environment, **_kw) -> None:
    if getattr(environment, "web_ui", None) is None:  # headless: no UI to extend
        return
    from benchmarks import panel

    panel.register(environment)


# -- connbench run: stages, warm-up reset, full-resolution stats ---------------------------------------
OUT = os.environ.get("CONNBENCH_LOCUST_OUT")
STAGES = json.loads(os.environ.get("CONNBENCH_STAGES", "[]"))
WARMUP = float(os.environ.get("CONNBENCH_WARMUP", "0"))
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}

if STAGES:

    class StagesShape(LoadTestShape):
        """Users per stage, from the scenario: [{"duration": s, "users": n, "spawn_rate": r}, ...]."""

        def tick(self):
            elapsed = self.get_run_time()
            for stage in STAGES:
                if elapsed < stage["duration"]:
                    users = int(stage["users"])
                    # spawn_rate 0 means "at once", for starting users and for stopping them (an idle gap)
                    return users, float(stage.get("spawn_rate") or 10_000)
                elapsed -= stage["duration"]
            return None


# Requests and failures counted before the warm-up reset, so the run can cross-check every request.
_state = {"warmup_requests": 0, "warmup_failures": 0}


def _percentiles(times: dict, count: int) -> dict[str, float | None]:
    return {k: (calculate_response_time_percentile(times, count, q) if count else None) for k, q in PERCENTILES.items()}


def _history(environment, out: Path) -> None:
    """Every second: users, requests and failures in that second and its latency percentiles."""
    stats = environment.runner.stats
    prev_times: dict = {}
    prev_req = prev_fail = 0
    reset_done = WARMUP <= 0
    start = time.time()
    with open(out / "history.jsonl", "a") as fh:
        while True:
            gevent.sleep(1.0 - (time.time() - start) % 1.0)
            now = time.time()
            if not reset_done and now - start >= WARMUP:
                _state["warmup_requests"] = stats.total.num_requests
                _state["warmup_failures"] = stats.total.num_failures
                stats.reset_all()
                reset_done = True
                prev_times, prev_req, prev_fail = {}, 0, 0
                (out / "measure_start").write_text(repr(now))
            total = stats.total
            times = dict(total.response_times)
            new_times = diff_response_time_dicts(times, prev_times)
            n = total.num_requests - prev_req
            row = {
                "t": now,
                "users": environment.runner.user_count,
                "requests": n,
                "failures": total.num_failures - prev_fail,
                "phase": "measure" if reset_done else "warmup",
                **_percentiles(new_times, sum(new_times.values())),
            }
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            prev_times, prev_req, prev_fail = times, total.num_requests, total.num_failures


@events.test_start.add_listener
def _on_start(environment, **_kw) -> None:
    if not OUT or isinstance(environment.runner, WorkerRunner):
        return
    out = Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    (out / "started").write_text(repr(time.time()))
    gevent.spawn(_history, environment, out)


def _errors_by_class(stats) -> dict[str, int]:
    """Failures by the name given to resp.failure() (the target's error class), summed over entries."""
    out: dict[str, int] = {}
    for e in stats.errors.values():
        name = str(e.error) if isinstance(e.error, Exception) else str(e.error)
        out[name] = out.get(name, 0) + e.occurrences
    return out


@events.test_stop.add_listener
def _on_stop(environment, **_kw) -> None:
    if not OUT or isinstance(environment.runner, WorkerRunner):
        return
    stats = environment.runner.stats
    total = stats.total
    final = {
        "stopped": time.time(),
        "measure_start": float((Path(OUT) / "measure_start").read_text())
        if (Path(OUT) / "measure_start").exists()
        else None,
        "requests": total.num_requests,
        "failures": total.num_failures,
        "total_response_time": total.total_response_time,
        "max_response_time": total.max_response_time,
        "response_times": {str(k): v for k, v in total.response_times.items()},
        "errors": _errors_by_class(stats),
        "all_requests": _state["warmup_requests"] + total.num_requests,
        "all_failures": _state["warmup_failures"] + total.num_failures,
        "ticks": {str(k): v for k, v in sorted(TICKS.items())},
        "sqlstate_ticks": {str(k): v for k, v in sorted(SQLSTATES.items())},
        "failure_spans": [[sent, done, error, n] for (sent, done, error), n in sorted(FAILURE_SPANS.items())],
    }
    Path(OUT, "final.json").write_text(json.dumps(final))
