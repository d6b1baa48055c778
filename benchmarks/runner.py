"""`connbench run`: the matrix of scenario x target x users level x repeat, on the embedded stack.

Each cell starts its target fresh (`connbench serve`, the same command users and containers run), waits for
/ready, drives it with Locust headless, samples PostgreSQL and the processes, collects /stats and stops the
target. Locust runs as a subprocess rather than as a library: its gevent monkey-patching would fight the
runner's threads, its CPU is then measurable on its own (a cell whose load generator is saturated is marked
invalid), and a crash in it cannot take the run down.

Completed cells are written as they finish (atomically), so an interrupted run keeps them and
`connbench run --resume DIR` finishes the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks import arrival as A
from benchmarks import summary as S
from benchmarks.errors import ConnbenchError
from benchmarks.external import ExternalPostgres, applicable
from benchmarks.network import DEFAULT_POOLER, Network
from benchmarks.pgbouncer import choose_targets, pgbouncer_version
from benchmarks.postgres import EmbeddedPostgres, find_bindir, server_version
from benchmarks.procs import die_with_parent, free_port, log_tail, other_connbench_runs, stop_process
from benchmarks.runfolder import Run, RunLock, check_out, new_run_id, prepare_out, read_manifest
from benchmarks.sampler import Sample, Sampler, open_monitor, poll_sessions, summarize_usage
from benchmarks.scenario import OPEN_KINDS, Scenario, load_profile
from benchmarks.targetstats import WindowStart, conn_slots, conn_wanted, get_stats, timing_columns
from benchmarks.verify import choose_verified
from targets.strategies import TARGETS, Settings, get_target
from targets.yours import UserTarget, from_json, is_user_target, register, running_url

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    target: str
    users: int
    repeat: int
    variant: tuple[tuple[str, Any], ...] = ()  # the swept values of this cell ([sweep] of the scenario)
    rate: int = 0  # arrival: the offered rate, requests/s (users is then 0)
    rtt_ms: float = 0  # the connection path ([network] of the scenario, or --rtt/--tls/--pooler)
    tls: bool = False
    pooler: str = ""  # where PgBouncer sits, for the pgbouncer targets only

    @property
    def id(self) -> str:
        swept = "".join(f".{k}{v}" for k, v in self.variant)
        level = {"arrival": f".rps{self.rate}", "capacity": ""}.get(self.scenario.kind, f".u{self.users}")
        return f"{self.scenario.name}.{self.target}{level}{swept}{self.path_suffix}.r{self.repeat}"

    @property
    def path_suffix(self) -> str:
        """The connection path in the id where it is not loopback: `.rtt10.tls.near-app`."""
        pooler = f".{self.pooler}" if self.pooler not in ("", DEFAULT_POOLER) else ""
        return (f".rtt{self.rtt_ms}" if self.rtt_ms else "") + (".tls" if self.tls else "") + pooler

    def path_columns(self) -> dict[str, Any]:
        return {"rtt_ms": self.rtt_ms, "tls": self.tls, "pooler": self.pooler}


# -- planning ------------------------------------------------------------------------------------------
def plan(scenarios: list[Scenario], target_ids: list[str], named: bool = False) -> list[Cell]:
    """Cells in run order: per scenario, level and repeat, every target in turn (so drift hits all alike).
    `named`: the user named the targets, so each scenario takes every one it is meant for (Scenario.selects)."""
    cells = []
    for sc in scenarios:
        levels = {"arrival": [(0, r) for r in sc.rates], "capacity": [(0, 0)]}.get(sc.kind, [(u, 0) for u in sc.users])
        for users, rate in levels:
            for variant in sc.variants():
                for repeat in range(1, sc.repeats + 1):
                    cells += [Cell(sc, t, users, repeat, variant, rate) for t in target_ids if sc.selects(t, named)]
    return with_paths(cells)


def with_path_override(scenarios: list[Scenario], path: tuple[Any, Any, Any]) -> list[Scenario]:
    """--rtt, --tls and --pooler, where given, replace every scenario's [network] values."""
    over = {k: v for k, v in zip(("rtt_ms", "tls", "pooler"), path, strict=True) if v is not None}
    return [dataclasses.replace(sc, **over) for sc in scenarios]


def with_paths(cells: list[Cell]) -> list[Cell]:
    """Each cell once per connection path of its scenario (RTT x TLS), a pgbouncer target once per pooler."""
    return [
        dataclasses.replace(c, rtt_ms=rtt, tls=tls, pooler=pooler)
        for c in cells
        for tls, rtt in itertools.product(c.scenario.tls, c.scenario.rtt_ms)
        for pooler in (c.scenario.pooler if TARGETS[c.target].via_pgbouncer else ("",))
    ]


# -- manifest ------------------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def new_manifest(run_id: str, profile: str, scenarios: list[Scenario], targets: list[str], skipped: dict) -> dict:
    return {
        "schema_version": S.SCHEMA_VERSION,
        "run_id": run_id,
        "profile": profile,
        "status": "running",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ended_at": None,
        "targets": targets,
        "skipped_targets": skipped,
        "scenarios": {sc.name: {k: v for k, v in asdict(sc).items() if k != "name"} for sc in scenarios},
        "target_settings": Settings.from_env().as_dict(),
        "git_commit": _git_commit(),
        "versions": {
            "python": platform.python_version(),
            "postgresql": server_version(),
            "pgbouncer": pgbouncer_version(),
            "locust": _version("locust"),
            "asyncpg": _version("asyncpg"),
            "psycopg": _version("psycopg"),
            "psycopg_pool": _version("psycopg-pool"),
            "uvicorn": _version("uvicorn"),
            "connbench": _version("connbench"),
        },
        "machine": {
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
        },
        "cells_total": 0,
        "cells_done": [],
        "cells_missing": [],
    }


# -- processes -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def stack(cells: list[Cell], db: ExternalPostgres | None = None) -> Iterator[tuple[EmbeddedPostgres, Network]]:
    """PostgreSQL configured for the cells' server settings and TLS mode, the connection path of their RTT and
    the PgBouncers they need; all always stopped. `db`: an existing database (--dsn) instead, as it is."""
    if db is not None:
        with Network(db) as net:
            yield db, net
        return
    sc, first = cells[0].scenario, cells[0]
    poolers = tuple(dict.fromkeys(c.pooler for c in cells if c.pooler))
    with (
        EmbeddedPostgres(max_connections=sc.max_connections, settings=sc.pg_settings, tls=first.tls) as pg,
        Network(pg, first.rtt_ms, poolers) as net,
    ):
        yield pg, net


def start_target(target: str, dsn: str, port: int, workers: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmarks.cli", "serve", target, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    if is_user_target(t := get_target(target)):  # a user's service: the command of its target file
        cmd, own_env = t.launch(port, dsn, workers)
        env = {**env, **own_env}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "CONNBENCH_DSN": dsn},  # not --dsn: the password stays out of `ps`
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0, path: str = "/ready") -> float | None:
    """Time (epoch) when `path` (/ready) first answered 200, or None when the target died or never got ready."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None
            try:
                if client.get(f"{url}{path}").status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    return None


def _samples_as_dicts(samples: list[Sample]) -> list[dict[str, Any]]:
    return [{"t": s.t, "connections": s.connections, "sessions": s.sessions, "db_up": s.db_up} for s in samples]


# -- one cell ------------------------------------------------------------------------------------------
class CellRun:
    """Everything one cell starts, so an interrupt can stop it all."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.sampler: Sampler | None = None

    def stop_all(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        for p in reversed(self.procs):
            stop_process(p, signal.SIGTERM, 10)


def run_load_cell(
    cell: Cell,
    pg: EmbeddedPostgres,
    net: Network,
    raw: Path,
    live: CellRun,
    load_workers: int = 1,
    load_master: str = "",
) -> dict:
    sc, target = cell.scenario, get_target(cell.target)
    raw.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = running_url(target) or f"http://127.0.0.1:{port}"
    dsn = net.dsn(target.id, cell.pooler or DEFAULT_POOLER)
    row: dict[str, Any] = {
        "cell_id": cell.id, "scenario": sc.name, "target": target.id, "strategy": target.strategy,
        "driver": target.driver, "users": cell.users, "repeat": cell.repeat, "workers": sc.workers,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "valid": True, "invalid_reason": "",
    }  # fmt: skip
    target_env = sc.target_env_for(cell.variant)
    db_params = sc.db_params_for(cell.variant)
    row.update(
        params=json.dumps({**db_params, **dict(cell.variant)}, separators=(",", ":")),
        pool_max=Settings.from_env({**os.environ, **target_env}).pool_max,
    )
    # Locust starts first and waits for the go file: its imports overlap the target's start-up, not the cell.
    go = raw / "go"
    locust_out = raw / "locust"
    locust_env = {
        **os.environ,
        "CONNBENCH_LOCUST_OUT": str(locust_out),
        "CONNBENCH_STAGES": json.dumps(sc.load_stages(cell.users)),
        "CONNBENCH_WARMUP": str(sc.warmup),
        "CONNBENCH_DB_QUERY": urllib.parse.urlencode(db_params),
        "CONNBENCH_GO_FILE": str(go),
    }
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
           "--csv", str(raw / "locust"), "--csv-full-history", "--only-summary", "--stop-timeout", "2",
           "--exit-code-on-error", "0", "--loglevel", "WARNING", target.id]  # fmt: skip
    if sc.kind in OPEN_KINDS:  # the target's arrival user class in place of its closed loop
        open_env, open_args = open_load(cell, load_workers)
        locust_env.update(open_env)
        cmd[-1:] = open_args
    if load_master:  # Locust's master at HOST:PORT; `connbench load-worker` processes elsewhere connect to it
        host, _, master_port = load_master.rpartition(":")
        cmd[-1:-1] = ["--master", "--master-bind-host", host, "--master-bind-port", master_port,
                      "--expect-workers", str(load_workers), "--expect-workers-max-wait", "60"]  # fmt: skip
    elif load_workers > 1:
        # Locust's own master + forked workers, talking on loopback over a free port (not *:5557)
        master_port = str(free_port())
        cmd[-1:-1] = ["--processes", str(load_workers), "--master-bind-host", "127.0.0.1",
                      "--master-bind-port", master_port, "--master-port", master_port]  # fmt: skip
    with open(raw / "locust.log", "ab") as fh:
        locust = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=locust_env,
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
            last = log_tail(raw / "target.log", 3).replace("\n", " | ")
            return {**row, "valid": False, "invalid_reason": f"target failed to start: {last}"}
        row["time_to_ready_s"] = t_ready - t_launch

    sampler = Sampler(pg.admin_dsn, dbname=pg.dbname)
    live.sampler = sampler
    if proc is not None:
        sampler.watch("target", proc.pid)
    with contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
        sessions_before = poll_sessions(mon, pg.dbname)
        row["conn_slots"] = conn_slots(mon)
    sampler.start()
    sampler.watch("locust", locust.pid)
    window = WindowStart(url, locust_out)
    go.touch()
    events = run_actions(sc, locust, locust_out, proc, pg)
    try:
        locust.wait(sc.total_seconds() + 90)
    except subprocess.TimeoutExpired:
        stop_process(locust, signal.SIGTERM, 10)
        row.update(valid=False, invalid_reason="load generator did not stop in time")
    samples = sampler.stop()  # its last sample is taken now; sessions_opened is read once the target has exited
    live.sampler = None
    row["_died"] = proc is not None and proc.poll() is not None
    stats = get_stats(url) if not row["_died"] else None
    stats_start = window.stop()
    (raw / "stats.json").write_text(json.dumps({"measure_start": stats_start, "end": stats}, indent=1) + "\n")
    row.update(timing_columns(stats_start, stats), conn_wanted=conn_wanted(sc.workers, stats, stats_start))
    target_exit = stop_process(proc, signal.SIGTERM, 30)
    with contextlib.suppress(Exception), contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
        row["sessions_opened"] = poll_sessions(mon, pg.dbname) - sessions_before
    row["target_exit"] = target_exit
    if any(a.do in ("sigterm", "sigkill") for a in sc.actions):
        from benchmarks.faults import shutdown_metrics

        row.update(shutdown_metrics(pg, target.id, events, samples))
    return summarize(row, cell, raw, locust_out, samples, stats, events, load_workers)


def open_load(cell: Cell, load_workers: int) -> tuple[dict[str, str], list[str]]:
    """Locust's environment and arguments for an open-model cell: the target's arrival user class, its rate
    stages or the capacity search, and the senders cap shared out over the Locust processes."""
    sc = cell.scenario
    if sc.kind == "capacity":
        env = {"CONNBENCH_STAGES": "[]", "CONNBENCH_WARMUP": "0", "CONNBENCH_CAPACITY": json.dumps(sc.capacity)}
    else:
        env = {"CONNBENCH_STAGES": json.dumps(sc.load_stages(cell.rate))}
    senders = -(-sc.max_senders // load_workers)
    return env, ["--arrival", sc.arrival, "--max-senders", str(senders), A.ARRIVAL_PREFIX + cell.target]


def run_actions(
    sc: Scenario, locust: subprocess.Popen, locust_out: Path, proc: subprocess.Popen, pg: EmbeddedPostgres
) -> list[tuple[float, str]]:
    """Wait for the load to start, log its start, then do the scenario's actions at their times."""
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
        elif action.do == "sigterm":
            proc.send_signal(signal.SIGTERM)
            events.append((started, "sigterm"))
        elif action.do == "sigkill":
            proc.kill()
            events.append((started, "sigkill"))
        elif action.do == "mark":
            events.append((started, f"mark:{action.label}" if action.label else "mark"))
    return events


def summarize(
    row: dict[str, Any],
    cell: Cell,
    raw: Path,
    locust_out: Path,
    samples: list[Sample],
    stats: dict[str, Any] | None,
    events: list[tuple[float, str]],
    load_workers: int = 1,
) -> dict[str, Any]:
    """Fill the summary row from Locust's final.json, its history, the samples and /stats."""
    target = get_target(cell.target)
    app = target.conn_key
    died = row.pop("_died", stats is None)
    final_path = locust_out / "final.json"
    if not final_path.exists():
        row.update(
            valid=False,
            invalid_reason="load generator wrote no statistics (see raw/<cell>/locust.log)",
        )
        return row
    final = json.loads(final_path.read_text())
    offered: float | None = cell.rate
    if cell.scenario.kind == "capacity":  # the row describes the sustainable step; capacity.csv the search
        final, capacity = A.capacity_result(final, cell.scenario.capacity)
        keys = ("cell_id", "target", "strategy", "driver", "repeat")
        row["_capacity"] = {**{k: row[k] for k in keys}, **capacity}
        steps = json.loads(capacity["step_log"])
        offered = capacity["sustainable_rps"] or (steps[0][0] if steps else None)
    row.update(A.open_columns(final, cell.scenario.kind, offered))
    history = [json.loads(line) for line in (locust_out / "history.jsonl").read_text().splitlines() if line]
    t0 = float((locust_out / "started").read_text())
    start = final["measure_start"] or t0
    measure_s = final["stopped"] - start
    sdicts = _samples_as_dicts(samples)
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
    row.update(
        target_rss_mb=target_use["rss_mb"],
        target_cpu_pct=target_use["cpu_pct"],
        locust_cpu_pct=locust_use["cpu_pct"],
    )
    # The target's death is the cause to report first: Locust then spins on refused connections.
    if row["valid"] and died and not cell.scenario.actions:
        row.update(valid=False, invalid_reason="target died during the load")
    cpu_limit = S.LOCUST_CPU_LIMIT * load_workers  # one core per Locust process
    # A saturated load generator distorts latencies; a fault cell is read from its outcomes per 100 ms instead
    # (outage, recovery), which a busy Locust still records, and a target failing at once makes any Locust spin.
    if row["valid"] and (locust_use["cpu_pct"] or 0) > cpu_limit and not cell.scenario.actions:
        row.update(valid=False, invalid_reason=f"load generator CPU {locust_use['cpu_pct']:.0f}% > {cpu_limit:.0f}%")
    ts = S.per_second(history, sdicts, app, t0, events)
    from benchmarks.faults import action_metrics, errors_with_sqlstate

    row["errors_53300"] = errors_with_sqlstate(final, "53300", start, final["stopped"])
    if cell.scenario.actions:
        row.update(action_metrics(cell, ts, events, t0, final=final, samples=sdicts))
    for r in ts:
        r.update(
            cell_id=cell.id,
            scenario=cell.scenario.name,
            target=target.id,
            users_level=cell.users,
            repeat=cell.repeat,
        )
    row["_timeseries"] = ts
    return row


# -- the matrix ----------------------------------------------------------------------------------------
def run_matrix(
    profile: str = "quick",
    target_names: list[str] | None = None,
    scenario_names: list[str] | None = None,
    out: Path | None = None,
    resume: Path | None = None,
    baseline: bool = True,
    load_workers: int = 1,
    path: tuple[Any, Any, Any] = (None, None, None),
    user_targets: list[UserTarget] | None = None,
    dsn: str | None = None,
    load_master: str = "",
) -> Path:
    """Run (or finish) a matrix and return its folder. `path`: (rtts, tls modes, poolers) from the command line,
    each None or replacing every scenario's [network] value."""
    from rich.console import Console

    console = Console(stderr=True)
    find_bindir()  # no PostgreSQL: fail before creating anything
    db = ExternalPostgres(dsn) if dsn else None  # --dsn: an existing database, checked before anything
    lock: RunLock | None = None
    if resume is not None:
        manifest = read_manifest(resume)
        lock = RunLock(resume)
        lock.acquire()  # a second writer stops here, with one line naming the holder
        if manifest.get("status") == "running":
            manifest["writer_died"] = True
            console.print(f"[yellow]{resume}: its last writer died without finishing; resuming[/]")
        profile = manifest["profile"]
        path = tuple(None if v is None else tuple(v) for v in manifest.get("path_override", path))
        scenarios = with_path_override(load_profile(profile, list(manifest["scenarios"])), path)
        targets = manifest["targets"]
        named = manifest.get("targets_named", False)
        register(from_json(manifest.get("user_targets", [])))
        if manifest.get("database", {}).get("dsn") and db is None:
            raise ConnbenchError(f"{resume} measured the database {manifest['database']['dsn']}: give --dsn again")
        load_workers = manifest.get("load_workers", 1)
        load_master = manifest.get("load_master", "")
        baseline = manifest.get("baseline", baseline)
        out = resume
    else:
        check_options(load_workers)
        check_out(out)
        scenarios = with_path_override(load_profile(profile, scenario_names), path)
        if db is not None:
            db.check()
        if load_master and (target_names or not user_targets or not all(map(running_url, user_targets))):
            raise ConnbenchError(
                "--load-master: the targets connbench starts listen on loopback, out of reach of load workers on "
                "other machines; measure services on other hosts with --url"
            )
        named = bool(target_names)
        targets, skipped = choose_verified(
            target_names, user_targets or [], db, used=lambda t: any(sc.selects(t, named) for sc in scenarios)
        )
        if not targets and not skipped:
            names = ", ".join(sc.name for sc in scenarios)
            raise ConnbenchError(f"no scenario of the run ({names}) is meant for the targets named (see --plan)")
        if not targets:
            raise ConnbenchError("no runnable target: " + "; ".join(f"{t}: {r}" for t, r in skipped.items()))
        for t, reason in skipped.items():
            console.print(f"[yellow]skipping {t}: {reason}[/]")
        run_id = new_run_id(profile)
        created = out is None or not out.exists()
        out = prepare_out(out, run_id)
        try:
            lock = RunLock(out)
            lock.acquire()
            manifest = new_manifest(run_id, profile, scenarios, targets, skipped)
        except BaseException:
            if lock is not None:
                lock.release()
            if created:
                shutil.rmtree(out, ignore_errors=True)  # a failed start leaves no folder behind
            raise
        manifest.update(load_workers=load_workers, baseline=baseline, path_override=path, load_master=load_master)
        manifest["targets_named"] = named
        manifest.update(
            user_targets=[dataclasses.asdict(t) for t in user_targets or []],
            database={"dsn": db.describe(), "created": db.created} if db else {"embedded": True},
        )
    if db is not None and resume is not None:
        db.check()
    cells, skipped_cells = applicable(plan(scenarios, targets, named), db is not None)
    manifest["skipped_cells"] = skipped_cells
    for cell_id, reason in skipped_cells.items():
        console.print(f"[yellow]skipping {cell_id}: {reason}[/]")
    run = Run(out, manifest)
    for line in run.reconcile([c.id for c in cells]):
        console.print(f"[yellow]repaired[/] {line}")
    done = set(run.manifest["cells_done"])
    todo = [c for c in cells if c.id not in done]
    manifest.update(status="running", cells_total=len(cells), cells_missing=[c.id for c in todo], ended_at=None)
    run.save_manifest()
    console.print(f"connbench: {len(todo)} of {len(cells)} cells to run into {out}")
    live = CellRun()
    try:
        if baseline and not (out / "baseline.csv").exists():
            from benchmarks.baseline import run_baseline

            rtts = sorted({r for sc in scenarios for r in sc.rtt_ms})
            tls = sorted({t for sc in scenarios for t in sc.tls})
            with console.status("baseline: pgbench with and without -C"):
                seconds = 2 if manifest["profile"] == "smoke" else 5  # smoke: that it works, in its 90 s
                run_baseline(out / "baseline.csv", seconds=seconds, rtts=rtts, tls=tls, db=db)
        _run_cells(todo, run, live, console, load_workers, db, load_master)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up half-way
        live.stop_all()
        manifest.update(status="interrupted")
        console.print(f"[red]interrupted[/]: {len(manifest['cells_done'])} cells kept; finish with "
                      f"`connbench run --resume {out}`")  # fmt: skip
        raise
    except BaseException:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        live.stop_all()
        manifest.update(status="failed")
        raise
    else:
        manifest.update(status="complete")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        manifest["cells_missing"] = [c.id for c in cells if c.id not in set(manifest["cells_done"])]
        if manifest["status"] == "complete" and manifest["cells_missing"]:
            manifest["status"] = "incomplete"
        manifest["ended_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        run.save_manifest()
        shutil.rmtree(out / "raw" / ".partial", ignore_errors=True)
        lock.release()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return out


def check_options(load_workers: int) -> None:
    """Everything a run reads from the command line and the environment, checked before anything starts."""
    if load_workers < 1:
        raise ConnbenchError(f"--load-workers must be 1 or more, got {load_workers}")
    try:
        Settings.from_env()
    except ValueError as exc:
        raise ConnbenchError(str(exc)) from None


# Seconds a cell spends outside its load (start the target, wait for ready, start Locust, collect, stop); measured
# by tests/bench_loadgen.py and recorded in README.
PER_CELL_OVERHEAD_S = 1.0


def planned_seconds(cells: list[Cell]) -> float:
    """How long `cells` should take: their load stages plus the per-cell overhead (the progress bar's estimate)."""
    return sum(c.scenario.total_seconds() + PER_CELL_OVERHEAD_S for c in cells)


def describe_plan(profile: str, target_names: list[str] | None, scenario_names: list[str] | None) -> list[str]:
    """`connbench run --plan`: one line per scenario (cells, seconds) and the total, without starting anything."""
    scenarios = load_profile(profile, scenario_names)
    targets, _ = choose_targets(target_names)
    cells = plan(scenarios, targets, bool(target_names))
    lines = []
    for sc in scenarios:
        mine = [c for c in cells if c.scenario.name == sc.name]
        lines.append(f"{sc.name:14} {len(mine):4} cells  ~{planned_seconds(mine):6.0f} s")
    lines.append(f"{'total':14} {len(cells):4} cells  ~{planned_seconds(cells):6.0f} s ({profile} profile)")
    return lines


def _run_cells(
    todo: list[Cell],
    run: Run,
    live: CellRun,
    console: Any,
    load_workers: int = 1,
    db: ExternalPostgres | None = None,
    load_master: str = "",
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = planned_seconds(todo)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
               TimeElapsedColumn(), TextColumn("remaining ~{task.fields[eta]}")]  # fmt: skip
    started = time.monotonic()
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=len(todo), eta="?")
        spent = 0.0
        groups: dict[tuple, list[Cell]] = {}
        for c in todo:  # one PostgreSQL per server configuration and connection path, shared by the scenarios
            sc = c.scenario
            groups.setdefault((sc.max_connections, tuple(sorted(sc.pg_settings.items())), c.tls, c.rtt_ms), []).append(
                c
            )
        for group in groups.values():
            with stack(group, db) as (pg, net):
                for cell in group:
                    progress.update(task, description=cell.id)
                    partial = run.out / "raw" / ".partial"
                    shutil.rmtree(partial, ignore_errors=True)
                    others = set(other_connbench_runs())
                    if cell.scenario.kind == "cold-start":
                        from benchmarks.faults import run_cold_start_cell

                        row = run_cold_start_cell(cell, pg, net, partial, live)
                    else:
                        row = run_load_cell(cell, pg, net, partial, live, load_workers, load_master)
                    row.update(cell.path_columns())
                    for r in row.get("_timeseries", []):
                        r.update(cell.path_columns())
                    live.procs.clear()
                    others |= set(other_connbench_runs())
                    if others and row["valid"]:  # it shared the cores: not comparable with a run made alone
                        pids = ", ".join(map(str, sorted(others)))
                        row.update(valid=False, invalid_reason=f"another connbench run was running (pid {pids})")
                    final_raw = run.out / "raw" / cell.id
                    shutil.rmtree(final_raw, ignore_errors=True)
                    partial.rename(final_raw)
                    run.add(row)
                    if not row["valid"]:
                        progress.console.print(f"[yellow]{cell.id}: invalid: {row['invalid_reason']}[/]")
                    elif not progress.console.is_terminal:  # a log file gets one line per cell instead of a bar
                        done_n, total_n = len(run.manifest["cells_done"]), run.manifest["cells_total"]
                        progress.console.print(
                            f"cell {done_n}/{total_n} {cell.id} ({time.monotonic() - started:.0f} s)"
                        )
                    spent += planned_seconds([cell])
                    elapsed = time.monotonic() - started
                    eta = elapsed / spent * (total - spent) if spent else 0
                    progress.update(task, advance=1, eta=f"{eta:.0f}s")
                    if not pg.running():  # a fault may have left it down: start it again for the next cell
                        pg.restart("fast")
