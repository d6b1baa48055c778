"""Locust's wiring for connbench: the users of every target, the options, and the event listeners.

- The users (benchmarks/load/users.py): `<target>` closed loops and `arrival-<target>` open-model users, one
  pair per target of the registry; in the web UI (`connbench up`, docker compose) one pair per running target
  of CONNBENCH_TARGET_URLS, with its URL as host. The web UI gets the start form's picker and checks
  (benchmarks/load/webui.py) and the connection panel (benchmarks/load/panel.py).
- Response times are bucketed at 0.1 ms below 10 ms (Locust's default buckets are whole milliseconds), by
  replacing `locust.stats.bucket_response_time`, Locust's documented hook for custom bucketing.
- Under `connbench run`, `--connbench-plan FILE` names the cell's load plan (benchmarks/load/plan.py): a load
  shape follows its stages (or a capacity search runs, benchmarks/load/capacity.py), statistics are reset after
  its warm-up, and the recorder (benchmarks/load/recorder.py) writes Locust's own statistics at full
  resolution to the plan's folder. Without a plan this is plain Locust.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import gevent
import locust.runners
import locust.stats
from locust import LoadTestShape, events
from locust.runners import MasterRunner, WorkerRunner

from benchmarks.load import arrival as A
from benchmarks.load.capacity import CapacityRun
from benchmarks.load.panel import parse_target_urls
from benchmarks.load.plan import LoadPlan
from benchmarks.load.recorder import RECORDER, write_final, write_history
from benchmarks.load.users import PACE, ConnbenchUser, pace, user_classes
from benchmarks.results.summary import fine_bucket
from targets.registry import TARGETS
from targets.yours import register_from_env

locust.stats.bucket_response_time = fine_bucket  # type: ignore[assignment]
# Workers report to the master every second instead of every 3 s, so short cells lose less at their end.
locust.runners.WORKER_REPORT_INTERVAL = 1.0

register_from_env()  # the user's targets of this run (--target-file, --url: targets/yours.py)
CLASSES = user_classes(list(TARGETS), parse_target_urls(os.environ.get("CONNBENCH_TARGET_URLS")))
globals().update(CLASSES)
GO_WAIT_S = 120  # how long Locust waits for the runner's go file before it starts anyway


class PlanShape(LoadTestShape):
    """The plan's stages ({"users", "spawn_rate"} or {"rps"}), or arrival users until the capacity search has
    finished. Abstract: Locust does not pick it up by itself; the init listener installs it for a plan."""

    abstract = True

    def __init__(self, plan: LoadPlan, search: CapacityRun | None) -> None:
        super().__init__()
        self.plan = plan
        self.search = search

    def _open_users(self) -> int:
        """Arrival users to run: one per Locust process (each takes an even share of the rate)."""
        return max(1, self.runner.worker_count) if isinstance(self.runner, MasterRunner) else 1

    def tick(self) -> tuple[int, float] | None:
        if self.search is not None:
            return None if self.search.done else (self._open_users(), 10_000)
        elapsed = self.get_run_time()
        for stage in self.plan.stages:
            if elapsed < stage.duration:
                if stage.is_open:
                    return self._open_users(), 10_000
                # spawn_rate 0 means "at once", for starting users and for stopping them (an idle gap)
                return int(stage.users or 0), float(stage.spawn_rate or 10_000)
            elapsed -= stage.duration
        return None


class Cell:
    """This process's plan and capacity search, once the init listener has read them."""

    plan: LoadPlan | None = None
    search: CapacityRun | None = None
    master: Any = None  # a master's environment, waiting for Locust's quit to write final.json


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--connbench-plan", default="", include_in_web_ui=False,
                        help="a connbench run cell's load plan (plan.json); set by `connbench run`")  # fmt: skip
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
def _on_init(environment: Any, **_kw: Any) -> None:
    runner = environment.runner
    if runner is not None and not isinstance(runner, MasterRunner):
        runner.register_message("connbench_pace", lambda msg, **_: setattr(PACE, "per_user", msg.data))
    if getattr(environment, "web_ui", None) is not None:
        from benchmarks.load import panel, webui

        webui.register(environment, CLASSES)
        panel.register(environment)
    if path := environment.parsed_options.connbench_plan:
        _install_plan(environment, LoadPlan.read(path))


def _install_plan(environment: Any, plan: LoadPlan) -> None:
    """Apply a cell's plan to this process, then wait for the runner's go file (the target is ready)."""
    Cell.plan = plan
    ConnbenchUser.db_path = plan.db_path
    environment.parsed_options.arrival = plan.arrival
    environment.parsed_options.max_senders = plan.max_senders
    RECORDER.spans = plan.failure_spans
    if plan.capacity is not None:
        Cell.search = CapacityRun(plan.capacity)
    if plan.stages or Cell.search is not None:
        shape = PlanShape(plan, Cell.search)
        shape.runner = environment.runner
        environment.shape_class = shape
    # Locust is started while the target is still starting, so that its own imports overlap the target's
    # start-up instead of adding to the cell; the runner creates this file once the target is ready.
    deadline = time.monotonic() + GO_WAIT_S
    while plan.go_file and not os.path.exists(plan.go_file) and time.monotonic() < deadline:
        time.sleep(0.005)


@events.report_to_master.add_listener
def _report_open(client_id: str, data: dict, **_kw: Any) -> None:
    data["connbench_open"] = RECORDER.take_open()


@events.worker_report.add_listener
def _collect_open(client_id: str, data: dict, **_kw: Any) -> None:
    RECORDER.add_open(data.get("connbench_open") or {})


@events.test_start.add_listener
def _on_start(environment: Any, **_kw: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    plan = Cell.plan
    if plan is None:  # the web UI: --arrival-rate paces the arrival users
        gevent.spawn(pace, environment, lambda _elapsed: getattr(environment.parsed_options, "arrival_rate", 0.0))
        return
    out = Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "started").write_text(repr(time.time()))
    gevent.spawn(write_history, environment, plan)
    search = Cell.search
    if search is not None:
        gevent.spawn(search.run, environment, out)
        gevent.spawn(pace, environment, lambda _elapsed: search.rps)
        return
    if plan.is_open:
        stages = plan.rate_stages()
        gevent.spawn(pace, environment, lambda elapsed: A.rate_at(stages, elapsed))
    if plan.stages:  # end on time: a shape is only asked once a second, which would add up to a second per cell
        gevent.spawn_later(plan.seconds, _end_shape, environment)


def _end_shape(environment: Any) -> None:
    """End the shape's greenlet: headless Locust then stops the users and quits, once, as after a shape's None."""
    shape = getattr(environment.runner, "shape_greenlet", None)
    if shape is not None:
        shape.kill(block=False)


@events.test_stop.add_listener
def _on_stop(environment: Any, **_kw: Any) -> None:
    """The measured window's end. A single process writes final.json now; a master waits for Locust's `quit`,
    after which its workers have sent their last statistics (they send none when told to stop, only when told
    to quit), so that its counts include every request its workers made."""
    if Cell.plan is None or isinstance(environment.runner, WorkerRunner):
        return
    RECORDER.stopped = time.time()
    if not isinstance(environment.runner, MasterRunner):
        write_final(environment, Cell.plan)
    else:
        Cell.master = environment


@events.quit.add_listener
def _on_quit(**_kw: Any) -> None:
    if Cell.master is not None and Cell.plan is not None:
        write_final(Cell.master, Cell.plan)
