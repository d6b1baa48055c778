"""`connbench run`: the matrix of scenario x target x users level x repeat, on the embedded stack.

Each cell starts its target fresh (`connbench serve`, the same command users and containers run), waits for
/ready, drives it with Locust headless, samples PostgreSQL and the processes, collects /stats and stops the
target (each cell kind: benchmarks/run/kinds/). Cells share one PostgreSQL per
server configuration and connection path.

Completed cells are written as they finish (atomically), so an interrupted run keeps them and
`connbench run --resume DIR` finishes the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.errors import ConnbenchError
from benchmarks.results import summary_json
from benchmarks.results.runfolder import Run, RunLock, check_out, new_run_id, prepare_out, read_manifest
from benchmarks.run.baseline import run_baseline, seconds_for
from benchmarks.run.cells import Cell, CellRun, applicable, plan, planned_seconds, with_path_override
from benchmarks.run.kinds import CellContext
from benchmarks.run.manifest import new_manifest
from benchmarks.run.options import RunOptions
from benchmarks.run.scenario import Scenario, load_profile
from benchmarks.run.thresholds import Scope, check_run, parse_list
from benchmarks.run.verify import choose_verified
from benchmarks.stack.external import Database, ExternalPostgres
from benchmarks.stack.middlebox import Middlebox
from benchmarks.stack.network import Network
from benchmarks.stack.pgbouncer import choose_targets
from benchmarks.stack.postgres import EmbeddedPostgres, find_bindir
from benchmarks.stack.procs import other_connbench_runs
from targets.contract import Settings
from targets.yours import register, running_url


@contextlib.contextmanager
def stack(cells: list[Cell], db: ExternalPostgres | None = None) -> Iterator[tuple[Database, Network]]:
    """PostgreSQL configured for the cells' server settings and TLS mode, the connection path of their RTT and
    the PgBouncers they need; all always stopped. `db`: an existing database (--dsn) instead, as it is."""
    if db is not None:
        with Network(db) as net:
            yield db, net
        return
    sc, first = cells[0].scenario, cells[0]
    poolers = tuple(dict.fromkeys(c.pooler for c in cells if c.pooler))
    with contextlib.ExitStack() as stack:
        box = stack.enter_context(Middlebox(sc.idle_drop_s)) if sc.idle_drop_s else None
        listen = (box.host_address, box.address) if box else None
        pg = stack.enter_context(
            EmbeddedPostgres(
                max_connections=sc.max_connections, settings=sc.pg_settings, tls=first.tls, also_listen=listen
            )
        )
        net = stack.enter_context(Network(pg, first.rtt_ms, poolers, middlebox=box))
        yield pg, net


# -- the matrix ----------------------------------------------------------------------------------------
def run_matrix(options: RunOptions) -> Path:
    """Run (or finish, with options.resume) a matrix and return its folder."""
    from rich.console import Console

    console = Console(stderr=True)
    find_bindir()  # no PostgreSQL: fail before creating anything
    db = ExternalPostgres(options.dsn) if options.dsn else None  # --dsn: an existing database, checked before anything
    lock: RunLock | None = None
    if options.resume is not None:
        out = options.resume
        manifest = read_manifest(out)
        lock = RunLock(out)
        lock.acquire()  # a second writer stops here, with one line naming the holder
        if manifest.get("status") == "running":
            manifest["writer_died"] = True
            console.print(f"[yellow]{out}: its last writer died without finishing; resuming[/]")
        options = RunOptions.from_manifest(manifest, out, options.dsn)
        scenarios = with_path_override(load_profile(options.profile, list(manifest["scenarios"])), options.path)
        targets = manifest["targets"]
        named = bool(options.targets)
        register(list(options.user_targets))
        if manifest.get("database", {}).get("dsn") and db is None:
            raise ConnbenchError(f"{out} measured the database {manifest['database']['dsn']}: give --dsn again")
    else:
        check_options(options)
        check_out(options.out)
        scenario_names = list(options.scenarios) if options.scenarios is not None else None
        scenarios = with_path_override(load_profile(options.profile, scenario_names), options.path)
        if db is not None:
            db.check()
        yours = list(options.user_targets)
        if options.load_master and (options.targets or not yours or not all(map(running_url, yours))):
            raise ConnbenchError(
                "--load-master: the targets connbench starts listen on loopback, out of reach of load workers on "
                "other machines; measure services on other hosts with --url"
            )
        named = bool(options.targets)
        targets, skipped = choose_verified(
            list(options.targets) if options.targets else None,
            yours,
            db,
            used=lambda t: any(sc.selects(t, named) for sc in scenarios),
        )
        if not targets and not skipped:
            names = ", ".join(sc.name for sc in scenarios)
            raise ConnbenchError(f"no scenario of the run ({names}) is meant for the targets named (see --plan)")
        if not targets:
            raise ConnbenchError("no runnable target: " + "; ".join(f"{t}: {r}" for t, r in skipped.items()))
        for t, reason in skipped.items():
            console.print(f"[yellow]skipping {t}: {reason}[/]")
        run_id = new_run_id(options.profile)
        created = options.out is None or not options.out.exists()
        out = prepare_out(options.out, run_id)
        try:
            lock = RunLock(out)
            lock.acquire()
            manifest = new_manifest(run_id, options, scenarios, targets, skipped)
        except BaseException:
            if lock is not None:
                lock.release()
            if created:
                shutil.rmtree(out, ignore_errors=True)  # a failed start leaves no folder behind
            raise
        manifest["database"] = {"dsn": db.describe(), "created": db.created} if db else {"embedded": True}
    if db is not None and options.resume is not None:
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
    _INTERRUPTED.clear()
    signal.signal(signal.SIGINT, _interrupt)
    try:
        if options.baseline and not (out / "baseline.csv").exists():
            rtts = sorted({r for sc in scenarios for r in sc.rtt_ms})
            tls = sorted({t for sc in scenarios for t in sc.tls})
            with console.status("baseline: pgbench with and without -C"):
                seconds = seconds_for(manifest["profile"])
                run_baseline(out / "baseline.csv", seconds=seconds, rtts=rtts, tls=tls, db=db)
        _run_cells(todo, run, live, console, options.load_workers, db, options.load_master)
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
        ended = manifest["status"] in ("complete", "incomplete") and bool(manifest["cells_done"])
        if ended:  # checked on every cell written, then summary.json from the saved files
            manifest["thresholds"] = check_run(out, options.thresholds, scoped_thresholds(scenarios, options))
        run.save_manifest()
        if ended:
            summary_json.write(out)
        shutil.rmtree(out / "raw" / ".partial", ignore_errors=True)
        lock.release()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return out


_INTERRUPTED = threading.Event()


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C while cells run: KeyboardInterrupt, and remembered. Python drops an exception raised where it
    cannot propagate (a Ctrl-C that lands in the fork of a target or of Locust is printed as "Exception
    ignored" and lost), so the next cell does not start either way."""
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def check_options(options: RunOptions) -> None:
    """Everything a run reads from the command line and the environment, checked before anything starts."""
    if options.load_workers < 1:
        raise ConnbenchError(f"--load-workers must be 1 or more, got {options.load_workers}")
    try:
        Settings.from_env()
    except ValueError as exc:
        raise ConnbenchError(str(exc)) from None
    for ut in options.user_targets:  # a target file's thresholds (the scenario files check their own)
        parse_list(ut.source, list(ut.thresholds))


# Seconds a cell spends outside its load (start the target, wait for ready, start Locust, collect, stop); measured
# by tests/bench_loadgen.py and recorded in README.


def describe_plan(options: RunOptions) -> list[str]:
    """`connbench run --plan`: one line per scenario (cells, seconds) and the total, without starting anything."""
    profile = options.profile
    scenarios = load_profile(profile, list(options.scenarios) if options.scenarios is not None else None)
    targets, _ = choose_targets(list(options.targets) if options.targets else None)
    cells = plan(scenarios, targets, bool(options.targets))
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
            key = (sc.max_connections, tuple(sorted(sc.pg_settings.items())), c.tls, c.rtt_ms, sc.idle_drop_s)
            groups.setdefault(key, []).append(c)
        for group in groups.values():
            with stack(group, db) as (pg, net):
                for cell in group:
                    if _INTERRUPTED.is_set():  # a Ctrl-C whose KeyboardInterrupt was swallowed (see _interrupt)
                        raise KeyboardInterrupt
                    progress.update(task, description=cell.id)
                    partial = run.out / "raw" / ".partial"
                    shutil.rmtree(partial, ignore_errors=True)
                    others = set(other_connbench_runs())
                    ctx = CellContext(pg, net, partial, live, load_workers, load_master)
                    result = cell.scenario.cell_kind.run(cell, ctx)
                    row = result.row
                    row.update(cell.path_columns())
                    for r in result.timeseries:
                        r.update(cell.path_columns())
                    live.procs.clear()
                    others |= set(other_connbench_runs())
                    if others and row["valid"]:  # it shared the cores: not comparable with a run made alone
                        pids = ", ".join(map(str, sorted(others)))
                        row.update(valid=False, invalid_reason=f"another connbench run was running (pid {pids})")
                    final_raw = run.out / "raw" / cell.id
                    shutil.rmtree(final_raw, ignore_errors=True)
                    partial.rename(final_raw)
                    run.add(row, result.timeseries, result.capacity)
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


def scoped_thresholds(scenarios: list[Scenario], options: RunOptions) -> list[tuple[str, Scope]]:
    """The scenario files' thresholds (for their cells) and the target files' (for their target's cells)."""
    return [(t, Scope("scenario", sc.name)) for sc in scenarios for t in sc.thresholds] + [
        (t, Scope("target", ut.id)) for ut in options.user_targets for t in ut.thresholds
    ]
