"""The cells Locust drives (the kinds closed-loop load, arrival and capacity): Locust (started first, waiting for
its go file) against a freshly started target, the sampler, the scenario's actions at their times, then the
summary row from Locust's statistics, the samples and the target's /stats.

Locust runs as a subprocess rather than as a library: its gevent monkey-patching would fight the runner's
threads, its CPU is then measurable on its own (a cell whose load generator is saturated is marked invalid),
and a crash in it cannot take the run down. What it must do is the cell's load plan (benchmarks/load/plan.py),
written to raw/<cell>/plan.json and passed with `--connbench-plan`.

A kind of this family subclasses LocustKind: its load stages (or capacity search), its user class and, for
the capacity search, how the final statistics narrow to one step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks.load import LOCUSTFILE
from benchmarks.load import arrival as A
from benchmarks.load.plan import LoadPlan, Stage
from benchmarks.load.sampler import (
    Sample,
    Sampler,
    backend_memory_mb,
    open_monitor,
    poll_sessions,
    summarize_usage,
    terminate_sessions,
)
from benchmarks.load.targetstats import WindowStart, conn_slots, conn_wanted, get_stats, timing_columns
from benchmarks.results import summary as S
from benchmarks.run.cells import DEFAULT_MAX_CONNECTIONS, Cell
from benchmarks.run.faults import (
    action_metrics,
    errors_with_sqlstate,
    exited_at,
    freeze_metrics,
    orphan_sessions,
    shutdown_metrics,
    silent_drop_metrics,
)
from benchmarks.run.kinds import CellContext, CellKind, CellResult, failed_start, row_header
from benchmarks.run.scenario import POOLER_ACTIONS, Scenario
from benchmarks.stack.external import Database
from benchmarks.stack.network import DEFAULT_POOLER
from benchmarks.stack.pgbouncer import PgBouncer
from benchmarks.stack.procs import die_with_parent, free_port, stop_process
from benchmarks.stack.targetproc import start_target, wait_ready
from targets.contract import TOO_MANY_MESSAGES, Settings
from targets.families import exit_grace_s
from targets.registry import get_target
from targets.yours import child_env, running_url

LOCUST_GRACE_S = 90  # beyond the plan's seconds, how long Locust may take before the cell gives up on it


class LocustKind(CellKind):
    """A kind whose cells Locust drives: closed-loop users, or the open model (`open` True)."""

    open = False

    def stages(self, sc: Scenario, level: int) -> tuple[Stage, ...]:
        raise NotImplementedError

    def seconds(self, sc: Scenario) -> float:
        return sum(s.duration for s in self.stages(sc, 1))

    def user_class(self, cell: Cell) -> str:
        return (A.ARRIVAL_PREFIX if self.open else "") + cell.target

    def plan(self, cell: Cell, raw: Path, load_workers: int) -> LoadPlan:
        """What Locust does in this cell (the senders cap is shared out over the Locust processes)."""
        sc = cell.scenario
        return LoadPlan(
            out="locust",  # relative to raw/, where plan.json is
            go_file="go",
            stages=self.stages(sc, cell.rate if self.open else cell.users),
            warmup=sc.warmup,
            db_query=urllib.parse.urlencode(sc.db_params_for(cell.variant)),
            arrival=sc.arrival,
            max_senders=-(-sc.max_senders // load_workers),
            # each failure's send time: the requests lost at a signal, the hang after a silent drop (faults.py)
            failure_spans=bool(sc.signals or sc.idle_drop_s),
        )

    def narrow(self, cell: Cell, final: dict[str, Any], row: dict[str, Any]) -> tuple[dict, dict | None, float | None]:
        """The final statistics the row describes, the capacity.csv row (None), and the offered rate."""
        return final, None, cell.rate

    def run(self, cell: Cell, ctx: CellContext) -> CellResult:
        return run_locust_cell(self, cell, ctx)


def run_locust_cell(kind: LocustKind, cell: Cell, ctx: CellContext) -> CellResult:
    sc, target = cell.scenario, get_target(cell.target)
    raw, pg, live = ctx.raw, ctx.pg, ctx.live
    raw.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = running_url(target) or f"http://127.0.0.1:{port}"
    dsn = ctx.net.dsn(target.id, cell.pooler or DEFAULT_POOLER)
    row = row_header(cell, target, sc.workers)
    target_env = sc.target_env_for(cell.variant)
    row.update(
        params=json.dumps({**sc.db_params_for(cell.variant), **dict(cell.variant)}, separators=(",", ":")),
        pool_max=Settings.from_env({**os.environ, **target_env}).pool_max,
    )
    # Locust starts first and waits for the go file: its imports overlap the target's start-up, not the cell.
    plan = kind.plan(cell, raw, ctx.load_workers)
    plan_file = plan.write(raw / "plan.json")
    locust_out, go = raw / plan.out, raw / plan.go_file
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
           "--csv", str(raw / "locust"), "--csv-full-history", "--only-summary", "--stop-timeout", "2",
           "--exit-code-on-error", "0", "--loglevel", "WARNING", "--connbench-plan", str(plan_file),
           kind.user_class(cell)]  # fmt: skip
    if ctx.load_master:  # Locust's master at HOST:PORT; `connbench load-worker` processes elsewhere connect to it
        host, _, master_port = ctx.load_master.rpartition(":")
        cmd[-1:-1] = ["--master", "--master-bind-host", host, "--master-bind-port", master_port,
                      "--expect-workers", str(ctx.load_workers), "--expect-workers-max-wait", "60"]  # fmt: skip
    elif ctx.load_workers > 1:
        # Locust's own master + forked workers, talking on loopback over a free port (not *:5557)
        master_port = str(free_port())
        cmd[-1:-1] = ["--processes", str(ctx.load_workers), "--master-bind-host", "127.0.0.1",
                      "--master-bind-port", master_port, "--master-port", master_port]  # fmt: skip
    with open(raw / "locust.log", "ab") as fh:
        locust = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=child_env(),  # the run's own targets, for Locust's user classes
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    live.procs.append(locust)
    proc = None  # a --url service runs already: nothing to start, signal or stop
    if not running_url(target):
        t_launch = time.time()
        proc = start_target(target.id, dsn, port, sc.workers, target_env, raw / "target.log")
        live.procs.append(proc)
        t_ready = wait_ready(url, proc, path=target.ready_path)
        if t_ready is None:
            stop_process(proc, signal.SIGTERM, 10)
            stop_process(locust, signal.SIGTERM, 10)
            return failed_start(row, raw / "target.log")
        row["time_to_ready_s"] = t_ready - t_launch

    sampler = Sampler(pg.admin_dsn, dbname=pg.dbname)
    live.sampler = sampler
    if proc is not None:
        sampler.watch("target", proc.pid)
    if pg.pid is not None:  # PostgreSQL connbench started: its CPU, the backends of ended sessions included
        sampler.watch("postgres", pg.pid, reaped=True)
    with contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
        sessions_before = poll_sessions(mon, pg.dbname)
        row["conn_slots"] = conn_slots(mon)
    sampler.start()
    sampler.watch("locust", locust.pid)
    window = WindowStart(url, locust_out)
    box = ctx.net.middlebox
    dropped_before = box.dropped_packets() if box else 0
    go.touch()
    bouncer = ctx.net.bouncers.get(cell.pooler or DEFAULT_POOLER) if target.via_pgbouncer else None

    def new_instance(n: int) -> str:
        return start_instance(target.id, dsn, target_env, raw / f"instance-{n}.log", target.ready_path)

    events = run_actions(sc, locust, locust_out, proc, pg, target.conn_key, bouncer, new_instance)
    try:
        locust.wait(plan.seconds + LOCUST_GRACE_S)
    except subprocess.TimeoutExpired:
        stop_process(locust, signal.SIGTERM, 10)
        row.update(valid=False, invalid_reason="load generator did not stop in time")
    samples = sampler.stop()  # its last sample is taken now; sessions_opened is read once the target has exited
    if pg.pid is not None:  # the target's backends as the load left them (none for a connection per request)
        with contextlib.suppress(psycopg.Error), contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
            row["db_backend_mb"] = backend_memory_mb(mon, target.conn_key, pg.dbname)
    live.sampler = None
    died = proc is not None and proc.poll() is not None
    stats = get_stats(url) if not died else None
    stats_start = window.stop()
    (raw / "stats.json").write_text(json.dumps({"measure_start": stats_start, "end": stats}, indent=1) + "\n")
    row.update(timing_columns(stats_start, stats), conn_wanted=conn_wanted(sc.workers, stats, stats_start))
    # Behind a silent drop a target's requests (and so its exit) may hang on dead connections: 1 s, not 30.
    target_exit = stop_process(proc, signal.SIGTERM, 1 if sc.idle_drop_s else exit_grace_s(target))
    with contextlib.suppress(Exception), contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
        row["sessions_opened"] = poll_sessions(mon, pg.dbname) - sessions_before
    row["target_exit"] = target_exit
    if box is not None:
        row.update(dropped_packets=box.dropped_packets() - dropped_before, orphans=orphan_sessions(pg, target.conn_key))
    if sc.signals:
        row.update(shutdown_metrics(pg, target.id, events, samples))
    return summarize(kind, row, cell, locust_out, samples, stats, events, died, ctx.load_workers)


def run_actions(
    sc: Scenario,
    locust: subprocess.Popen,
    locust_out: Path,
    proc: subprocess.Popen | None,
    pg: Database,
    app: str,
    bouncer: PgBouncer | None = None,
    new_instance: Callable[[int], str] | None = None,
) -> list[tuple[float, str]]:
    """Wait for the load to start, log its start, then do the scenario's actions at their times (a --url
    service is never signalled: cells.skip_reason leaves such cells out; the pooler actions act on the
    cell's PgBouncer, and do nothing for a target that connects directly)."""
    deadline = time.monotonic() + 60
    started_file = locust_out / "started"
    while not (started_file.exists() and started_file.read_text().strip()):  # exists before it is written
        if locust.poll() is not None or time.monotonic() > deadline:
            return []
        time.sleep(0.05)
    t0 = float(started_file.read_text())
    events: list[tuple[float, str]] = [(t0, "load-start")]
    for action in sorted(sc.actions, key=lambda a: a.at):
        delay = t0 + action.at - time.time()
        if delay > 0:
            time.sleep(delay)
        started = time.time()
        if action.do == "restart-db":
            pg.restart(action.mode)
            events += [(started, f"db-stop:{action.mode}"), (time.time(), "db-up")]
        elif action.do == "terminate":
            with contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
                ended = terminate_sessions(mon, app, pg.dbname)
            events.append((started, f"terminate:{ended}"))
        elif action.do == "sigterm":
            assert proc is not None
            proc.send_signal(signal.SIGTERM)
            events.append((started, "sigterm"))
        elif action.do == "sigkill":
            assert proc is not None
            proc.kill()
            events.append((started, "sigkill"))
        elif action.do in POOLER_ACTIONS and bouncer is None:
            events.append((started, f"{action.do}:none"))  # a target without PgBouncer: the control
        elif action.do == "restart-pooler":
            assert bouncer is not None
            bouncer.restart(action.mode)
            events += [(started, f"pooler-stop:{action.mode}"), (time.time(), "pooler-up")]
        elif action.do in ("pause-pooler", "resume-pooler"):
            assert bouncer is not None
            bouncer.console("PAUSE" if action.do == "pause-pooler" else "RESUME")
            events.append((started, action.do.removesuffix("-pooler")))
        elif action.do in ("freeze", "thaw"):  # the target's whole process group, as a platform suspends it
            assert proc is not None
            os.killpg(proc.pid, signal.SIGSTOP if action.do == "freeze" else signal.SIGCONT)
            events.append((started, action.do))
        elif action.do == "new-instance":
            assert new_instance is not None
            events.append((started, new_instance(sum(e.startswith("instance:") for _, e in events) + 1)))
        elif action.do == "mark":
            events.append((started, f"mark:{action.label}" if action.label else "mark"))
    return events


INSTANCE_REQUESTS = 5  # what a new instance is asked to serve
# How PostgreSQL's 53300 reads in a target's log or answer: its SQLSTATE, or one of its messages.
REFUSED = ("53300", *TOO_MANY_MESSAGES)


def start_instance(target_id: str, dsn: str, env: dict[str, str], log: Path, ready_path: str) -> str:
    """Another process of the target, started as a platform scales out while the cell's own may be frozen: it
    gets ready (or dies, as an eager pool does when PostgreSQL refuses it), is asked for INSTANCE_REQUESTS
    sequential GET /db, and is stopped. Its event: `instance:ok=N[,53300=M][,error=K][,refused=R]`, the
    counts that are not 0 (R: the connects PostgreSQL refused, as its log tells them: a pool that retries in the
    background may still serve), or `instance:died[:53300]` when it never got ready (53300: its log names the
    refusal)."""
    port = free_port()
    proc = start_target(target_id, dsn, port, 1, env, log)
    try:
        url = f"http://127.0.0.1:{port}"
        if wait_ready(url, proc, timeout=15, path=ready_path) is None:
            stop_process(proc, signal.SIGKILL, 5)
            return (
                "instance:died:53300" if any(r in log.read_text(errors="replace") for r in REFUSED) else "instance:died"
            )
        counts = {"ok": 0, "53300": 0, "error": 0}
        with httpx.Client(timeout=5.0) as client:
            for _ in range(INSTANCE_REQUESTS):
                try:
                    resp = client.get(f"{url}/db")
                except httpx.HTTPError:
                    counts["error"] += 1
                    continue
                refused = any(r in resp.text for r in REFUSED)
                counts["ok" if resp.status_code == 200 else "53300" if refused else "error"] += 1
    finally:
        stop_process(proc, signal.SIGTERM, 10)
    lines = log.read_text(errors="replace").splitlines()
    counts["refused"] = sum(any(r in line for r in REFUSED) for line in lines)
    return "instance:" + ",".join(f"{k}={v}" for k, v in counts.items() if v or k == "ok")


def summarize(
    kind: LocustKind,
    row: dict[str, Any],
    cell: Cell,
    locust_out: Path,
    samples: list[Sample],
    stats: dict[str, Any] | None,
    events: list[tuple[float, str]],
    died: bool,
    load_workers: int = 1,
) -> CellResult:
    """Fill the summary row from Locust's final.json, its history, the samples and /stats."""
    target = get_target(cell.target)
    app = target.conn_key
    final_path = locust_out / "final.json"
    if not final_path.exists():
        row.update(
            valid=False,
            invalid_reason="load generator wrote no statistics (see raw/<cell>/locust.log)",
        )
        return CellResult(row)
    final = json.loads(final_path.read_text())
    final, capacity, offered = kind.narrow(cell, final, row)
    row.update(A.open_columns(final, kind.open, offered))
    history = [json.loads(line) for line in (locust_out / "history.jsonl").read_text().splitlines() if line]
    t0 = float((locust_out / "started").read_text())
    start = final["measure_start"] or t0
    measure_s = final["stopped"] - start
    sdicts = [s.as_dict() for s in samples]
    errors = final["errors"]
    row.update(
        measure_s=round(measure_s, 3),
        requests=final["requests"],
        failures=final["failures"],
        error_rate=S.rate(final["failures"], final["requests"]),
        rps=S.rate(final["requests"], measure_s),
        latency_mean_ms=S.rate(final["total_response_time"], final["requests"]),
        errors=S.errors_json(errors),
        locust_requests=final["all_requests"],
        target_requests=(stats or {}).get("requests"),
        **S.latency_stats(final["response_times"]),
        **S.connection_figures(sdicts, app, start, final["stopped"]),
    )
    row["sessions_per_request"] = S.rate(row.get("sessions_opened") or 0, final["all_requests"])
    row["counts_agree"] = (
        S.counts_agree(
            final["all_requests"],
            row["target_requests"],
            row.get("sessions_opened"),
            cell.users or cell.scenario.max_senders,  # requests in flight at the stop
            target.session_per_request,
            final["all_failures"],
        )
        # /stats answers from one worker process only: with several, the target's count is partial
        if row["target_requests"] is not None and cell.scenario.workers == 1
        else None
    )
    window = [s for s in samples if start <= s.t <= final["stopped"]]
    target_use = summarize_usage(window, "target")
    locust_use = summarize_usage(window, "locust")
    db_use = summarize_usage(window, "postgres")
    row.update(
        target_rss_mb=target_use["rss_mb"],
        target_cpu_pct=target_use["cpu_pct"],
        locust_cpu_pct=locust_use["cpu_pct"],
        db_cpu_pct=db_use["cpu_pct"],
        db_cpu_ms_per_request=S.db_cpu_per_request(db_use["cpu_s"], window, final["requests"], measure_s),
    )
    # The target's death is the cause to report first: Locust then spins on refused connections. Under a
    # lowered connection cap it is the outcome under test (a pool that does not fit takes its replica down):
    # the cell stays valid and its timeseries marks when the target stopped answering.
    exited = died and not cell.scenario.actions and cell.scenario.max_connections != DEFAULT_MAX_CONNECTIONS
    if exited:
        events.append((exited_at(final) or final["stopped"], S.TARGET_EXITED))
    elif row["valid"] and died and not cell.scenario.actions:
        row.update(valid=False, invalid_reason="target died during the load")
    cpu_limit = S.LOCUST_CPU_LIMIT * load_workers  # one core per Locust process
    # A saturated load generator distorts latencies; a fault cell is read from its outcomes per 100 ms instead
    # (outage, recovery), which a busy Locust still records, and a target failing at once (or gone: refused
    # connections) makes any Locust spin.
    if row["valid"] and (locust_use["cpu_pct"] or 0) > cpu_limit and not (cell.scenario.actions or exited):
        row.update(valid=False, invalid_reason=f"load generator CPU {locust_use['cpu_pct']:.0f}% > {cpu_limit:.0f}%")
    ts = S.per_second(history, sdicts, app, t0, events)
    row["errors_53300"] = errors_with_sqlstate(final, "53300", start, final["stopped"])
    if cell.scenario.actions:
        row.update(action_metrics(cell, ts, events, t0, final=final, samples=sdicts))
    if cell.scenario.idle_drop_s:
        row.update(silent_drop_metrics(final, events, t0))
    row.update(freeze_metrics(app, events, sdicts))
    for r in ts:
        r.update(
            cell_id=cell.id,
            scenario=cell.scenario.name,
            target=target.id,
            users_level=cell.users,
            repeat=cell.repeat,
        )
    return CellResult(row, ts, capacity)
