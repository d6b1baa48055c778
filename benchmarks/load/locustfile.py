"""Locust load for the targets: two FastHttpUser classes per target of the registry, each hitting GET /db.

- `<target>` is a closed loop (the next request when the last one answered); `arrival-<target>` is the open
  model: requests due at a rate (--arrival-rate, or the scenario's rate stages), latency from the due time,
  dropped and late requests counted (benchmarks/load/arrival.py has the arithmetic).
- A failed request is named by the error class in the target's 503 body, so failures group by cause.
- Response times are bucketed at 0.1 ms below 10 ms (Locust's default buckets are whole milliseconds), by
  replacing `locust.stats.bucket_response_time`, Locust's documented hook for custom bucketing.
- Under `connbench run` (CONNBENCH_LOCUST_OUT set) a load shape follows the scenario's stages, statistics are
  reset after the warm-up, and Locust's own stats objects are written at full resolution: one line per
  second to history.jsonl and the measured window to final.json; a capacity cell runs its rate search here.
- In the web UI (`connbench up`, docker compose) each class's host comes from CONNBENCH_TARGET_URLS.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import gevent
import gevent.pool
import locust.runners
import locust.stats
from locust import FastHttpUser, LoadTestShape, constant, events, task
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import calculate_response_time_percentile, diff_response_time_dicts
from locust.user.users import LOCUST_STATE_STOPPING

from benchmarks.load import arrival as A
from benchmarks.load.panel import parse_target_urls
from benchmarks.results.summary import fine_bucket
from targets.strategies import TARGETS
from targets.yours import register_from_env

locust.stats.bucket_response_time = fine_bucket
# Workers report to the master every second instead of every 3 s, so short cells lose less at their end.
locust.runners.WORKER_REPORT_INTERVAL = 1.0
# GET /db's parameters from the scenario (e.g. "work_ms=50&hold=1"); the request keeps the name /db.
DB_PATH = "/db" + (f"?{q}" if (q := os.environ.get("CONNBENCH_DB_QUERY")) else "")


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
        with self.client.get(DB_PATH, name="/db", catch_response=True) as resp:
            _judge(resp, sent)


def _judge(resp, sent: float) -> None:
    """Mark a /db response a success or a failure named by the error class of the target's 503 body."""
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
# the SQLSTATEs of the 503 bodies, and (in cells that signal the target) failures by send time to 0.1 ms and
# completion to 10 ms, so a request in flight at the signal is known even when geventhttpclient re-sent it.
# Fault scenarios time outages and recoveries with these (benchmarks/run/faults.py).
TICKS: dict[int, dict[str, int]] = {}
SQLSTATES: dict[int, dict[str, int]] = {}
FAILURE_SPANS: dict[tuple[int, int, str], int] = {}
SPANS = os.environ.get("CONNBENCH_FAILURE_SPANS") == "1"  # only where a signal's lost requests are counted


def _tick(outcome: str, sqlstate: str | None = None, sent: float | None = None) -> None:
    now = time.time()
    ds = int(now * 10)
    bucket = TICKS.setdefault(ds, {})
    bucket[outcome] = bucket.get(outcome, 0) + 1
    if sqlstate:
        codes = SQLSTATES.setdefault(ds, {})
        codes[sqlstate] = codes.get(sqlstate, 0) + 1
    if sent is not None and SPANS:  # sent to 0.1 ms (a request lasts about 1 ms), failed to 10 ms
        key = (int(sent * 10_000), int(now * 100), outcome)
        FAILURE_SPANS[key] = FAILURE_SPANS.get(key, 0) + 1


register_from_env()  # the user's targets of this run (--target-file, --url: targets/yours.py)
_urls = parse_target_urls(os.environ.get("CONNBENCH_TARGET_URLS"))
for _t in TARGETS.values():
    globals()[_t.id] = type(_t.id, (TargetUser,), {"target_id": _t.id, "host": _urls.get(_t.id)})


# -- open model: requests that arrive at a rate -------------------------------------------------------
ARRIVAL_PREFIX = A.ARRIVAL_PREFIX
# This process's counts of requests due, dropped (every sender busy) and late (sent > 1 ms after due), and the
# most senders in flight at once. Workers send theirs to the master with each stats report (then start again
# from zero); the master, or a single process, keeps the totals.
OPEN = {"scheduled": 0, "dropped": 0, "late": 0, "senders_peak": 0}
# The rate each arrival user of this process is asked for (requests/s), set by the pacer (_pace) on the master.
PACE = {"per_user": 0.0}


class ArrivalUser(FastHttpUser):
    """Open-model load: requests due at a rate, however slowly the target answers.

    One scheduler greenlet draws due times (fixed interval or Poisson) and hands each due request to a free
    sender greenlet; senders grow as needed up to --max-senders, each with its own keep-alive connection. A
    request due while every sender is busy is counted as dropped. Each request is reported to Locust's own
    statistics with its response time counted from when it was due, so the percentiles, the charts and the web
    UI all show what a client arriving on time would have waited.
    """

    abstract = True
    target_id = ""
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, environment) -> None:
        self.max_senders = max(1, int(getattr(environment.parsed_options, "max_senders", 100) or 100))
        self.concurrency = self.max_senders  # the HTTP client's connection pool: one connection per sender
        super().__init__(environment)

    @task
    def schedule(self) -> None:
        arrival = getattr(self.environment.parsed_options, "arrival", "poisson")
        senders = gevent.pool.Pool(self.max_senders)
        rng = random.Random()
        due = time.time()
        try:
            while self._state != LOCUST_STATE_STOPPING:
                rate = PACE["per_user"]
                if rate <= 0:
                    gevent.sleep(0.05)
                    due = time.time()
                    continue
                due += A.gap(rate, arrival, rng)
                wait = due - time.time()
                if wait > 0:
                    gevent.sleep(wait)
                OPEN["scheduled"] += 1
                if senders.full():
                    OPEN["dropped"] += 1
                    continue
                senders.spawn(self._send, due)
                OPEN["senders_peak"] = max(OPEN["senders_peak"], len(senders))
            senders.join(timeout=self.network_timeout)  # let requests in flight finish and be counted
        finally:
            senders.kill(block=False)

    def _send(self, due: float) -> None:
        sent = time.time()
        if sent - due > A.LATE_S:
            OPEN["late"] += 1
        with self.client.get(DB_PATH, name="/db", catch_response=True) as resp:
            # Locust timed the request from its send; count from when it was due instead
            resp.request_meta["response_time"] += (sent - due) * 1000
            _judge(resp, sent)


for _t in TARGETS.values():
    _name = ARRIVAL_PREFIX + _t.id
    globals()[_name] = type(_name, (ArrivalUser,), {"target_id": _t.id, "host": _urls.get(_t.id)})


@events.init_command_line_parser.add_listener
def _arrival_options(parser) -> None:
    parser.add_argument(
        "--arrival-rate",
        type=float,
        default=0.0,
        help="arrival-<target> users: requests per second over all of them (open model)",
    )
    parser.add_argument(
        "--arrival",
        choices=A.ARRIVALS,
        default="poisson",
        help="arrival-<target> users: due times at a fixed interval (uniform) or a Poisson process",
    )
    parser.add_argument(
        "--max-senders", type=int, default=100, help="arrival-<target> users: requests in flight per user at most"
    )


@events.init.add_listener
def _arrival_messages(environment, **_kw) -> None:
    if environment.runner is not None and not isinstance(environment.runner, MasterRunner):
        environment.runner.register_message("connbench_pace", lambda msg, **_: PACE.update(per_user=msg.data))


@events.report_to_master.add_listener
def _report_open(client_id, data, **_kw) -> None:
    data["connbench_open"] = dict(OPEN)
    OPEN.update(scheduled=0, dropped=0, late=0, senders_peak=0)


@events.worker_report.add_listener
def _collect_open(client_id, data, **_kw) -> None:
    got = data.get("connbench_open") or {}
    for key in ("scheduled", "dropped", "late"):
        OPEN[key] += got.get(key, 0)
    OPEN["senders_peak"] = max(OPEN["senders_peak"], got.get("senders_peak", 0))


def _arrival_users(runner) -> int:
    counts = runner.reported_user_classes_count if isinstance(runner, MasterRunner) else runner.user_classes_count
    return sum(n for name, n in counts.items() if name.startswith(ARRIVAL_PREFIX))


def _pace(environment, total_rate) -> None:
    """Split the total rate evenly over the arrival users running (on every worker), ten times a second.

    `total_rate(elapsed)` is the plan: the scenario's stages, the capacity search, or --arrival-rate. After the
    last stage the rate holds until Locust stops the users (the shape ends the test at its next tick, up to a
    second later), so the measured window never ends in a stretch with no requests due.
    """
    start = time.time()
    last = None
    total = 0.0
    while True:
        planned = total_rate(time.time() - start)
        total = total if planned is None else planned
        users = _arrival_users(environment.runner)
        per_user = total / users if users else 0.0
        if per_user != last:
            environment.runner.send_message("connbench_pace", per_user)
            last = per_user
        gevent.sleep(0.1)


@events.init.add_listener
def _connbench_panel(environment, **_kw) -> None:
    if getattr(environment, "web_ui", None) is None:  # headless: no UI to extend
        return
    from benchmarks.load import panel

    panel.register(environment)


# -- connbench run: stages, warm-up reset, full-resolution stats ---------------------------------------
OUT = os.environ.get("CONNBENCH_LOCUST_OUT")
STAGES = json.loads(os.environ.get("CONNBENCH_STAGES", "[]"))
WARMUP = float(os.environ.get("CONNBENCH_WARMUP", "0"))
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
# The capacity search's settings (benchmarks/run/scenario.py CAPACITY_DEFAULTS), and its state.
CAPACITY = json.loads(os.environ.get("CONNBENCH_CAPACITY", "null"))
SEARCH: dict = {"rps": 0.0, "done": False, "steps": []}


def _open_users(runner) -> int:
    """Arrival users to run: one per Locust process (each takes an even share of the rate)."""
    return max(1, runner.worker_count) if isinstance(runner, MasterRunner) else 1


if STAGES:

    class StagesShape(LoadTestShape):
        """Users per stage, from the scenario: [{"duration": s, "users": n, "spawn_rate": r}, ...]; an
        arrival scenario's stages give a rate instead ({"duration": s, "rps": r}), paced by _pace."""

        def tick(self):
            elapsed = self.get_run_time()
            for stage in STAGES:
                if elapsed < stage["duration"]:
                    if "rps" in stage:
                        return _open_users(self.runner), 10_000
                    users = int(stage["users"])
                    # spawn_rate 0 means "at once", for starting users and for stopping them (an idle gap)
                    return users, float(stage.get("spawn_rate") or 10_000)
                elapsed -= stage["duration"]
            return None


if CAPACITY:

    class CapacityShape(LoadTestShape):
        """Arrival users until the capacity search (_search) has found its rate or spent its budget."""

        def tick(self):
            return None if SEARCH["done"] else (_open_users(self.runner), 10_000)


# Requests and failures counted before the warm-up reset, so the run can cross-check every request.
_state: dict = {"warmup_requests": 0, "warmup_failures": 0}


def _percentiles(times: dict, count: int) -> dict[str, float | None]:
    return {k: (calculate_response_time_percentile(times, count, q) if count else None) for k, q in PERCENTILES.items()}


def _history(environment, out: Path) -> None:
    """Every second: users, requests and failures in that second and its latency percentiles."""
    stats = environment.runner.stats
    prev_times: dict = {}
    prev_req = prev_fail = 0
    prev_open = dict(OPEN)
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
                OPEN.update(scheduled=0, dropped=0, late=0, senders_peak=0)
                reset_done = True
                prev_times, prev_req, prev_fail = {}, 0, 0
                prev_open = dict(OPEN)
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
                **{k: OPEN[k] - prev_open[k] for k in ("scheduled", "dropped", "late")},
            }
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            prev_times, prev_req, prev_fail, prev_open = times, total.num_requests, total.num_failures, dict(OPEN)


def _snapshot(stats) -> dict:
    total = stats.total
    return {"t": time.time(), "requests": total.num_requests, "failures": total.num_failures,
            "times": dict(total.response_times), "errors": _errors_by_class(stats), **OPEN}  # fmt: skip


def _search(environment, out: Path) -> None:
    """The capacity search, one rate step after another in this one Locust process: each step paces its rate,
    lets `step_warmup` seconds pass (the backlog of a failed step drains), measures `step_duration` seconds from
    Locust's own totals, and asks A.Search for the next rate, until it has none or the budget would be spent.
    Every step goes to steps.jsonl with its histogram, so the run can rebuild any step's figures."""
    cfg = CAPACITY
    search = A.Search(cfg["start_rps"], cfg["growth"], cfg["precision"], cfg["max_rps"])
    stats = environment.runner.stats
    started = time.time()
    step_s = cfg["step_warmup"] + cfg["step_duration"]
    try:
        with open(out / "steps.jsonl", "a") as fh:
            while (rate := search.next()) is not None and time.time() - started + step_s <= cfg["budget"]:
                SEARCH["rps"] = rate
                gevent.sleep(cfg["step_warmup"])
                a = _snapshot(stats)
                gevent.sleep(cfg["step_duration"])
                b = _snapshot(stats)
                times = diff_response_time_dicts(b["times"], a["times"])
                n = b["requests"] - a["requests"]
                counts = (b[k] - a[k] for k in ("scheduled", "requests", "failures", "dropped", "late"))
                p99 = calculate_response_time_percentile(times, n, 0.99) if n else None
                step = A.Step(rate, b["t"] - a["t"], *counts, p99)
                reason = A.verdict(step, cfg["slo_ms"], cfg["max_error"])
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
                SEARCH["steps"].append(record)
                fh.write(json.dumps(record) + "\n")
                fh.flush()
    finally:
        SEARCH.update(rps=0.0, done=True, search_s=time.time() - started)


@events.test_start.add_listener
def _on_start(environment, **_kw) -> None:
    if not OUT or isinstance(environment.runner, WorkerRunner):
        return
    out = Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    (out / "started").write_text(repr(time.time()))
    gevent.spawn(_history, environment, out)
    if CAPACITY:
        gevent.spawn(_search, environment, out)
    elif STAGES:  # end on time: a load shape is only asked once a second, which would add up to a second per cell
        gevent.spawn_later(sum(float(st["duration"]) for st in STAGES), _end_shape, environment)


def _end_shape(environment) -> None:
    """End the shape's greenlet: headless Locust then stops the users and quits, once, as after a shape's None."""
    shape = getattr(environment.runner, "shape_greenlet", None)
    if shape is not None:
        shape.kill(block=False)


@events.test_start.add_listener
def _start_pacer(environment, **_kw) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    if any("rps" in st for st in STAGES):
        plan = lambda elapsed: A.rate_at(STAGES, elapsed)  # noqa: E731
    elif CAPACITY:
        plan = lambda _elapsed: SEARCH["rps"]  # noqa: E731
    else:
        plan = lambda _elapsed: getattr(environment.parsed_options, "arrival_rate", 0.0)  # noqa: E731
    gevent.spawn(_pace, environment, plan)


def _errors_by_class(stats) -> dict[str, int]:
    """Failures by the name given to resp.failure() (the target's error class), summed over entries."""
    out: dict[str, int] = {}
    for e in stats.errors.values():
        name = str(e.error) if isinstance(e.error, Exception) else str(e.error)
        out[name] = out.get(name, 0) + e.occurrences
    return out


@events.test_stop.add_listener
def _on_stop(environment, **_kw) -> None:
    """The measured window's end. A single process writes final.json now; a master waits for Locust's `quit`,
    after which its workers have sent their last statistics (they send none when told to stop, only when told
    to quit), so that its counts include every request its workers made."""
    if not OUT or isinstance(environment.runner, WorkerRunner):
        return
    _state["stopped"] = time.time()
    if isinstance(environment.runner, MasterRunner):
        _state["environment"] = environment
    else:
        _write_final(environment)


@events.quit.add_listener
def _on_quit(**_kw) -> None:
    if (environment := _state.pop("environment", None)) is not None:
        _write_final(environment)


def _write_final(environment) -> None:
    stats = environment.runner.stats
    total = stats.total
    final = {
        "stopped": _state["stopped"],
        "measure_start": float((Path(OUT) / "measure_start").read_text())
        if (Path(OUT) / "measure_start").exists()
        else None,
        "requests": total.num_requests,
        "failures": total.num_failures,
        "total_response_time": total.total_response_time,
        "max_response_time": total.max_response_time,
        "response_times": {str(k): v for k, v in total.response_times.items()},
        "errors": _errors_by_class(stats),
        "open": dict(OPEN),
        "search": {"steps": SEARCH["steps"], "search_s": SEARCH.get("search_s")} if CAPACITY else None,
        "all_requests": _state["warmup_requests"] + total.num_requests,
        "all_failures": _state["warmup_failures"] + total.num_failures,
        "ticks": {str(k): v for k, v in sorted(TICKS.items())},
        "sqlstate_ticks": {str(k): v for k, v in sorted(SQLSTATES.items())},
        "failure_spans_s": [  # [sent, failed, error, n]: times in seconds, floored to 0.1 ms and 10 ms
            [sent / 10_000, done / 100, error, n] for (sent, done, error), n in sorted(FAILURE_SPANS.items())
        ]
        if SPANS
        else None,
    }
    Path(OUT, "final.json").write_text(json.dumps(final))


# Under `connbench run`, Locust is started while the target is still starting, so that its own imports overlap
# the target's start-up instead of adding to the cell; the run creates this file once the target is ready.
# Waiting here, at import, holds Locust before it builds its runner and starts the load.
if GO_FILE := os.environ.get("CONNBENCH_GO_FILE"):
    _deadline = time.monotonic() + 120
    while not os.path.exists(GO_FILE) and time.monotonic() < _deadline:
        time.sleep(0.005)
