"""Locust's users for the targets: two FastHttpUser classes per target, each hitting GET /db.

- `<target>` is a closed loop (the next request when the last one answered); `arrival-<target>` is the open
  model: requests due at a rate (--arrival-rate, or the plan's rate stages or capacity search), latency from
  the due time, dropped and late requests counted (benchmarks/load/arrival.py has the arithmetic).
- A failed request is named by the error class in the target's 503 body, so failures group by cause.
- In the web UI (`connbench up`, docker compose) only the running targets have classes, each request is named
  `<target> /db` so Locust's tables show each target apart, and the class picker offers the closed loops only:
  `arrival_swap` drives the chosen targets' arrival users instead when the form sets an arrival rate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.pool
from locust import FastHttpUser, constant, task
from locust.runners import MasterRunner
from locust.user.users import LOCUST_STATE_STOPPING

from benchmarks.load import arrival as A
from benchmarks.load.recorder import RECORDER, UNANSWERED

ARRIVAL_PREFIX = A.ARRIVAL_PREFIX


class ConnbenchUser(FastHttpUser):
    """What both kinds of user share: the target, timeouts, and GET /db's path (the plan's parameters)."""

    abstract = True
    target_id = ""
    db_path = "/db"  # set from the load plan at init: e.g. "/db?work_ms=50&hold=1"; the request keeps the name /db
    request_name = "/db"  # "<target> /db" in the web UI, where one test loads several targets
    network_timeout = 30.0
    connection_timeout = 10.0


def judge(resp: Any, sent: float) -> None:
    """Mark a /db response a success or a failure named by the error class of the target's 503 body."""
    if resp.status_code == 200:
        resp.success()
        RECORDER.outcome("ok")
        return
    sqlstate = None
    try:
        body = resp.json()
        error = body.get("error") or f"HTTP {resp.status_code}"
        sqlstate = body.get("sqlstate")
    except Exception:
        error = f"HTTP {resp.status_code}" if resp.status_code else type(resp.error).__name__
    RECORDER.outcome(error, sqlstate, sent)
    resp.failure(error)


class TargetUser(ConnbenchUser):
    """A closed-loop user: one /db request after another, no think time."""

    abstract = True
    wait_time = constant(0)

    @task
    def db(self) -> None:
        sent = time.time()
        try:
            with self.client.get(self.db_path, name=self.request_name, catch_response=True) as resp:
                judge(resp, sent)
        except gevent.GreenletExit:  # still unanswered when the load ended: the user is stopped mid-request
            RECORDER.outcome(UNANSWERED, None, sent)
            raise


@dataclass
class Pace:
    """The rate each arrival user of this process is asked for (requests/s), set by the pacer on the master."""

    per_user: float = 0.0


PACE = Pace()


class ArrivalUser(ConnbenchUser):
    """Open-model load: requests due at a rate, however slowly the target answers.

    One scheduler greenlet draws due times (fixed interval or Poisson) and hands each due request to a free
    sender greenlet; senders grow as needed up to --max-senders, each with its own keep-alive connection. A
    request due while every sender is busy is counted as dropped. Each request is reported to Locust's own
    statistics with its response time counted from when it was due, so the percentiles, the charts and the web
    UI all show what a client arriving on time would have waited.
    """

    abstract = True

    def __init__(self, environment: Any) -> None:
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
                rate = PACE.per_user
                if rate <= 0:
                    gevent.sleep(0.05)
                    due = time.time()
                    continue
                due += A.gap(rate, arrival, rng)
                wait = due - time.time()
                if wait > 0:
                    gevent.sleep(wait)
                RECORDER.open["scheduled"] += 1
                if senders.full():
                    RECORDER.open["dropped"] += 1
                    continue
                senders.spawn(self._send, due)
                RECORDER.open["senders_peak"] = max(RECORDER.open["senders_peak"], len(senders))
            senders.join(timeout=self.network_timeout)  # let requests in flight finish and be counted
        finally:
            senders.kill(block=False)

    def _send(self, due: float) -> None:
        sent = time.time()
        if sent - due > A.LATE_S:
            RECORDER.open["late"] += 1
        with self.client.get(self.db_path, name=self.request_name, catch_response=True) as resp:
            # Locust timed the request from its send; count from when it was due instead
            resp.request_meta["response_time"] += (sent - due) * 1000
            judge(resp, sent)


def user_classes(target_ids: list[str], urls: dict[str, str]) -> dict[str, type[ConnbenchUser]]:
    """`<target>` and `arrival-<target>` for each target. With `urls` (the web UI: the running targets and
    their URLs), only the targets in `urls`, each with its URL as host and its own request name."""
    out: dict[str, type[ConnbenchUser]] = {}
    for tid in [t for t in target_ids if t in urls] if urls else target_ids:
        attrs = {"target_id": tid, "host": urls.get(tid), "request_name": f"{tid} /db" if urls else "/db"}
        out[tid] = type(tid, (TargetUser,), attrs)
        out[ARRIVAL_PREFIX + tid] = type(ARRIVAL_PREFIX + tid, (ArrivalUser,), attrs)
    return out


def picker_classes(classes: dict[str, type[ConnbenchUser]], arrival: bool) -> dict[str, type[ConnbenchUser]]:
    """What the web UI's class picker offers, by the closed loops' names: the closed-loop classes, or (with an
    arrival rate set) each target's arrival class under its closed loop's name, so one form is one load model."""
    return {
        name: classes[ARRIVAL_PREFIX + name] if arrival else cls
        for name, cls in classes.items()
        if not name.startswith(ARRIVAL_PREFIX)
    }


def arrival_users(runner: Any) -> int:
    counts = runner.reported_user_classes_count if isinstance(runner, MasterRunner) else runner.user_classes_count
    return sum(n for name, n in counts.items() if name.startswith(ARRIVAL_PREFIX))


def pace(environment: Any, total_rate: Callable[[float], float | None]) -> None:
    """Split the total rate evenly over the arrival users running (on every worker), ten times a second.

    `total_rate(elapsed)` is the plan: its rate stages, the capacity search, or --arrival-rate. After the last
    stage the rate holds until Locust stops the users (the shape ends the test at its next tick, up to a second
    later), so the measured window never ends in a stretch with no requests due.
    """
    start = time.time()
    last = None
    total = 0.0
    while True:
        planned = total_rate(time.time() - start)
        total = total if planned is None else planned
        users = arrival_users(environment.runner)
        per_user = total / users if users else 0.0
        if per_user != last:
            environment.runner.send_message("connbench_pace", per_user)
            last = per_user
        gevent.sleep(0.1)
