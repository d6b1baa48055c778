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
import csv
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks import summary as S
from benchmarks.errors import ConnbenchError
from benchmarks.pgbouncer import PgBouncer, choose_targets, pgbouncer_version
from benchmarks.postgres import EmbeddedPostgres, find_bindir, server_version
from benchmarks.procs import die_with_parent, free_port, log_tail, stop_process
from benchmarks.sampler import Sample, Sampler, open_monitor, poll_sessions, summarize_usage
from benchmarks.scenario import Scenario, load_profile
from targets.strategies import TARGETS, Settings, get_target

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
RESULTS_ROOT = Path("results")


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    target: str
    users: int
    repeat: int

    @property
    def id(self) -> str:
        return f"{self.scenario.name}.{self.target}.u{self.users}.r{self.repeat}"


# -- planning ------------------------------------------------------------------------------------------
def plan(scenarios: list[Scenario], target_ids: list[str]) -> list[Cell]:
    """Cells in run order: per scenario, level and repeat, every target in turn (so drift hits all alike)."""
    cells = []
    for sc in scenarios:
        for users in sc.users:
            for repeat in range(1, sc.repeats + 1):
                cells += [Cell(sc, t, users, repeat) for t in target_ids if sc.selects(t)]
    return cells


# -- files ---------------------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_csv_atomic(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    write_atomic(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


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
def stack(sc: Scenario, need_bouncer: bool) -> Iterator[tuple[EmbeddedPostgres, PgBouncer | None]]:
    """PostgreSQL (and PgBouncer) configured for one scenario; both always stopped."""
    with EmbeddedPostgres(max_connections=sc.max_connections, settings=sc.pg_settings) as pg:
        if need_bouncer:
            with PgBouncer(pg.port) as bouncer:
                yield pg, bouncer
        else:
            yield pg, None


def start_target(target: str, dsn: str, port: int, workers: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmarks.cli", "serve", target, "--port", str(port), "--dsn", dsn]
    cmd += ["--workers", str(workers)]
    with open(log, "ab") as fh:
        return subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> float | None:
    """Time (epoch) when /ready first answered 200, or None when the target died or never got ready."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None
            try:
                if client.get(f"{url}/ready").status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    return None


def get_stats(url: str) -> dict[str, Any] | None:
    try:
        return httpx.get(f"{url}/stats", timeout=5.0).json()
    except (httpx.HTTPError, ValueError):
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
    cell: Cell, pg: EmbeddedPostgres, bouncer: PgBouncer | None, raw: Path, live: CellRun, load_workers: int = 1
) -> dict:
    sc, target = cell.scenario, get_target(cell.target)
    raw.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dsn = bouncer.dsn if (target.via_pgbouncer and bouncer) else pg.dsn
    row: dict[str, Any] = {
        "cell_id": cell.id, "scenario": sc.name, "target": target.id, "strategy": target.strategy,
        "driver": target.driver, "users": cell.users, "repeat": cell.repeat, "workers": sc.workers,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "valid": True, "invalid_reason": "",
    }  # fmt: skip
    t_launch = time.time()
    proc = start_target(target.id, dsn, port, sc.workers, sc.target_env, raw / "target.log")
    live.procs.append(proc)
    t_ready = wait_ready(url, proc)
    if t_ready is None:
        stop_process(proc, signal.SIGTERM, 10)
        last = log_tail(raw / "target.log", 3).replace("\n", " | ")
        return {**row, "valid": False, "invalid_reason": f"target failed to start: {last}"}
    row["time_to_ready_s"] = t_ready - t_launch

    sampler = Sampler(pg.admin_dsn)
    live.sampler = sampler
    sampler.watch("target", proc.pid)
    with contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
        sessions_before = poll_sessions(mon)
    sampler.start()
    locust_out = raw / "locust"
    locust_env = {
        **os.environ,
        "CONNBENCH_LOCUST_OUT": str(locust_out),
        "CONNBENCH_STAGES": json.dumps(sc.load_stages(cell.users)),
        "CONNBENCH_WARMUP": str(sc.warmup),
    }
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
           "--csv", str(raw / "locust"), "--csv-full-history", "--only-summary", "--stop-timeout", "2",
           "--exit-code-on-error", "0", "--loglevel", "WARNING", target.id]  # fmt: skip
    if load_workers > 1:
        cmd[-1:-1] = ["--processes", str(load_workers)]  # Locust's own master + forked workers
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
    sampler.watch("locust", locust.pid)
    events = run_actions(sc, locust, locust_out, proc, pg)
    try:
        locust.wait(sc.total_seconds() + 90)
    except subprocess.TimeoutExpired:
        stop_process(locust, signal.SIGTERM, 10)
        row.update(valid=False, invalid_reason="load generator did not stop in time")
    time.sleep(1.5)  # backends flush their session counters about once a second
    samples = sampler.stop()
    live.sampler = None
    stats = get_stats(url) if proc.poll() is None else None
    target_exit = stop_process(proc, signal.SIGTERM, 30)
    with contextlib.suppress(Exception), contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
        row["sessions_opened"] = poll_sessions(mon) - sessions_before
    row["target_exit"] = target_exit
    if any(a.do in ("sigterm", "sigkill") for a in sc.actions):
        from benchmarks.faults import shutdown_metrics

        row.update(shutdown_metrics(pg, target.id, events, samples))
    return summarize(row, cell, raw, locust_out, samples, stats, events, load_workers)


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
    app = f"connbench:{target.id}"
    final_path = locust_out / "final.json"
    if not final_path.exists():
        row.update(
            valid=False,
            invalid_reason="load generator wrote no statistics (see raw/<cell>/locust.log)",
        )
        return row
    final = json.loads(final_path.read_text())
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
            cell.users,
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
    if row["valid"] and stats is None and not cell.scenario.actions:
        row.update(valid=False, invalid_reason="target died during the load")
    cpu_limit = S.LOCUST_CPU_LIMIT * load_workers  # one core per Locust process
    if row["valid"] and (locust_use["cpu_pct"] or 0) > cpu_limit:
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
class Run:
    """A results folder being written: manifest, summary.csv, timeseries.csv, raw/."""

    def __init__(self, out: Path, manifest: dict[str, Any]) -> None:
        self.out = out
        self.manifest = manifest
        self.summary = read_csv(out / "summary.csv")
        self.timeseries = read_csv(out / "timeseries.csv")

    def save_manifest(self) -> None:
        write_atomic(self.out / "manifest.json", json.dumps(self.manifest, indent=2, default=str) + "\n")

    def add(self, row: dict[str, Any]) -> None:
        ts = row.pop("_timeseries", [])
        self.summary.append(row)
        self.timeseries += ts
        write_csv_atomic(self.out / "timeseries.csv", S.TIMESERIES_COLUMNS, self.timeseries)
        write_csv_atomic(self.out / "summary.csv", S.SUMMARY_COLUMNS, self.summary)
        self.manifest["cells_done"].append(row["cell_id"])
        self.save_manifest()


def new_run_id(profile: str) -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{profile}"


def prepare_out(out: Path | None, run_id: str) -> Path:
    """Create the run folder (or fail clearly before anything is started)."""
    out = out or RESULTS_ROOT / run_id
    if out.exists() and any(out.iterdir()):
        raise ConnbenchError(f"{out} exists and is not empty (use --resume {out} to finish an interrupted run)")
    try:
        (out / "raw").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConnbenchError(f"cannot write the results folder {out}: {exc.strerror}") from None
    return out


def run_matrix(
    profile: str = "quick",
    target_names: list[str] | None = None,
    scenario_names: list[str] | None = None,
    out: Path | None = None,
    resume: Path | None = None,
    baseline: bool = True,
    load_workers: int = 1,
) -> Path:
    """Run (or finish) a matrix and return its folder."""
    from rich.console import Console

    console = Console(stderr=True)
    find_bindir()  # no PostgreSQL: fail before creating anything
    if resume is not None:
        mpath = resume / "manifest.json"
        if not mpath.exists():
            raise ConnbenchError(f"{resume} is not a connbench run folder (no manifest.json)")
        manifest = json.loads(mpath.read_text())
        profile = manifest["profile"]
        scenarios = load_profile(profile, list(manifest["scenarios"]))
        targets = manifest["targets"]
        load_workers = manifest.get("load_workers", 1)
        out = resume
    else:
        scenarios = load_profile(profile, scenario_names)
        targets, skipped = choose_targets(target_names)
        if not targets:
            raise ConnbenchError("no runnable target: " + "; ".join(f"{t}: {r}" for t, r in skipped.items()))
        for t, reason in skipped.items():
            console.print(f"[yellow]skipping {t}: {reason}[/]")
        run_id = new_run_id(profile)
        out = prepare_out(out, run_id)
        manifest = new_manifest(run_id, profile, scenarios, targets, skipped)
        manifest["load_workers"] = load_workers
    cells = plan(scenarios, targets)
    run = Run(out, manifest)
    done = {r["cell_id"] for r in run.summary}
    todo = [c for c in cells if c.id not in done]
    manifest.update(status="running", cells_total=len(cells), cells_missing=[c.id for c in todo], ended_at=None)
    run.save_manifest()
    console.print(f"connbench: {len(todo)} of {len(cells)} cells to run into {out}")
    live = CellRun()
    try:
        if baseline and not (out / "baseline.csv").exists():
            from benchmarks.baseline import run_baseline

            with console.status("baseline: pgbench with and without -C"):
                run_baseline(out / "baseline.csv")
        _run_cells(todo, run, live, console, load_workers)
    except KeyboardInterrupt:
        live.stop_all()
        manifest.update(status="interrupted")
        console.print(f"[red]interrupted[/]: {len(manifest['cells_done'])} cells kept; finish with "
                      f"`connbench run --resume {out}`")  # fmt: skip
        raise
    except BaseException:
        live.stop_all()
        manifest.update(status="failed")
        raise
    else:
        manifest.update(status="complete")
    finally:
        manifest["cells_missing"] = [c.id for c in cells if c.id not in set(manifest["cells_done"])]
        manifest["ended_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        run.save_manifest()
        shutil.rmtree(out / "raw" / ".partial", ignore_errors=True)
    return out


def _run_cells(todo: list[Cell], run: Run, live: CellRun, console: Any, load_workers: int = 1) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    per_cell_overhead = 4.0
    total = sum(c.scenario.total_seconds() + per_cell_overhead for c in todo)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
               TimeElapsedColumn(), TextColumn("remaining ~{task.fields[eta]}")]  # fmt: skip
    started = time.monotonic()
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=len(todo), eta="?")
        spent = 0.0
        groups: dict[tuple, list[Cell]] = {}
        for c in todo:  # one PostgreSQL per scenario (its settings and faults are its own)
            groups.setdefault((c.scenario.name,), []).append(c)
        for group in groups.values():
            sc = group[0].scenario
            need_bouncer = any(TARGETS[c.target].via_pgbouncer for c in group)
            with stack(sc, need_bouncer) as (pg, bouncer):
                for cell in group:
                    progress.update(task, description=cell.id)
                    partial = run.out / "raw" / ".partial"
                    shutil.rmtree(partial, ignore_errors=True)
                    if sc.kind == "cold-start":
                        from benchmarks.faults import run_cold_start_cell

                        row = run_cold_start_cell(cell, pg, bouncer, partial, live)
                    else:
                        row = run_load_cell(cell, pg, bouncer, partial, live, load_workers)
                    live.procs.clear()
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
                    spent += cell.scenario.total_seconds() + per_cell_overhead
                    elapsed = time.monotonic() - started
                    eta = elapsed / spent * (total - spent) if spent else 0
                    progress.update(task, advance=1, eta=f"{eta:.0f}s")
                    if not pg.running():  # a fault may have left it down: start it again for the next cell
                        pg.restart("fast")
