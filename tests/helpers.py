"""Helpers shared by the test files: run targets as real processes, ask PostgreSQL what it sees.

Everything here talks to real processes: `start_target` runs `connbench serve` under uvicorn and always
stops it, the counters query pg_stat_activity / pg_stat_database through the superuser DSN of an
EmbeddedPostgres (`pg.admin_dsn`), which is not counted as a target session.
"""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
import psycopg

from benchmarks.stack.procs import free_port

REPO = Path(__file__).resolve().parents[1]
# `python -m benchmarks.cli` is the `connbench` console script without depending on PATH.
CONNBENCH = [sys.executable, "-m", "benchmarks.cli"]
TEMP_PREFIXES = ("connbench-pg-", "connbench-pgb-")
T = TypeVar("T")


# -- waiting -------------------------------------------------------------------------------------------
def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; return it, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


# -- PostgreSQL's view ---------------------------------------------------------------------------------
def app_name(target_id: str) -> str:
    """The application_name every connection of a target carries."""
    return f"connbench:{target_id}"


def query(admin_dsn: str, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5, application_name="connbench:tests") as conn:
        return conn.execute(sql, params).fetchall()


def count_connections(admin_dsn: str, application_name: str, datname: str | None = None) -> int:
    """Client backends in pg_stat_activity with this application_name (and database, if given)."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = %s"
    params: list[Any] = [application_name]
    if datname is not None:
        sql += " AND datname = %s"
        params.append(datname)
    return query(admin_dsn, sql, params)[0][0]


def target_connections(admin_dsn: str, target_id: str) -> int:
    return count_connections(admin_dsn, app_name(target_id))


def count_by_database(admin_dsn: str, datname: str = "connbench") -> int:
    """Every client backend connected to `datname` (e.g. PgBouncer's server connections)."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = %s"
    return query(admin_dsn, sql, [datname])[0][0]


def sessions(admin_dsn: str, datname: str = "connbench") -> int:
    """pg_stat_database.sessions: sessions ever established to `datname` (counted when they start)."""
    return query(admin_dsn, "SELECT sessions FROM pg_stat_database WHERE datname = %s", [datname])[0][0]


def peak_connections(admin_dsn: str, target_id: str, work: Callable[[], T]) -> tuple[T, int]:
    """Runs `work()` while counting the target's connections every 20 ms: (what it returned, the peak)."""
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, target_connections(admin_dsn, target_id))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, peak


def max_connections(admin_dsn: str) -> int:
    return int(query(admin_dsn, "SHOW max_connections")[0][0])


def shutdown_rows(admin_dsn_connbench: str, target_id: str, pid: int | None = None) -> int:
    """Rows the exit hook wrote to shutdown_log (the table lives in the `connbench` database)."""
    sql = "SELECT count(*) FROM shutdown_log WHERE target = %s"
    params: list[Any] = [target_id]
    if pid is not None:
        sql += " AND pid = %s"
        params.append(pid)
    return query(admin_dsn_connbench, sql, params)[0][0]


# -- targets as processes ------------------------------------------------------------------------------
@dataclass
class RunningTarget:
    target_id: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    client: httpx.Client = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(self.url + path, **kw)

    def stats(self) -> dict[str, Any]:
        r = self.get("/stats")
        r.raise_for_status()
        return r.json()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def burst(self, n: int, path: str = "/db", timeout: float = 30.0) -> list[httpx.Response]:
        """`n` requests at once (one HTTP connection each); the responses in request order."""
        return asyncio.run(_burst(self.url + path, n, timeout))

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for exit (SIGKILL after `timeout`); the exit status."""
        return stop(self.proc, timeout)


async def _burst(url: str, n: int, timeout: float) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        return list(await asyncio.gather(*(client.get(url) for _ in range(n))))


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def serve_command(target_id: str, port: int, dsn: str, *extra: str) -> list[str]:
    return [*CONNBENCH, "serve", target_id, "--port", str(port), "--dsn", dsn, *extra]


@contextmanager
def start_target(
    target_id: str,
    dsn: str,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> Iterator[RunningTarget]:
    """Run `connbench serve TARGET --port P --dsn DSN`, wait for /ready, always stop it afterwards.

    `env` adds to the environment (e.g. CONNBENCH_POOL_MIN). Output goes to a log file shown on failure.
    """
    port = port or free_port()
    fd, log_name = tempfile.mkstemp(prefix=f"connbench-test-{target_id}-", suffix=".log")
    log_path = Path(log_name)
    proc_env = {**os.environ, **(env or {})}
    proc_env.setdefault("PYTHONUNBUFFERED", "1")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            serve_command(target_id, port, dsn, *extra_args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=proc_env,
            cwd=REPO,
            start_new_session=True,  # a Ctrl-C on pytest must not hit the target before the teardown does
        )
    client = httpx.Client(timeout=30.0)
    target = RunningTarget(target_id, port, proc, log_path, client)
    try:
        _wait_ready(target, ready_timeout)
        yield target
    finally:
        try:
            stop(proc)
        finally:
            client.close()
            log_path.unlink(missing_ok=True)


def _wait_ready(target: RunningTarget, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            raise AssertionError(
                f"{target.target_id} exited with {target.proc.returncode} before ready:\n{target.log()}"
            )
        try:
            if target.client.get(target.url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{target.target_id} not ready after {timeout:.0f} s:\n{target.log()}")


def sigint_default() -> None:
    """preexec_fn: SIGINT's default action in the child. A shell's background job starts with SIGINT ignored, and
    the child would inherit that; tests that send SIGINT to mean Ctrl-C must not depend on how pytest started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- the CLI as a process ------------------------------------------------------------------------------
def timeseries_events(run_dir: Path, **match: str) -> list[str]:
    """The events of timeseries.csv's rows whose columns equal `match` (e.g. cell_id=..., target=...), in order."""
    ts = pd.read_csv(run_dir / "timeseries.csv")
    keep = pd.Series(True, index=ts.index)
    for column, value in match.items():
        keep &= ts[column] == value
    return [e for e in ts.loc[keep, "event"].dropna() for e in e.split(";")]


def run_connbench(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run `connbench ARGS...` to completion, capturing text output."""
    return subprocess.run(
        [*CONNBENCH, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def temp_dirs() -> set[str]:
    """Every connbench service directory currently in the temp dir: anyone's, so on a shared machine a
    before/after difference can include another session's; `service_dirs(pid)` names a process's own."""
    root = tempfile.gettempdir()
    return {p for prefix in TEMP_PREFIXES for p in glob.glob(os.path.join(root, prefix + "*"))}


def pgbouncer_server_connections(bouncer: Any, admin_dsn: str, datname: str = "connbench") -> int:
    """Backends PostgreSQL shows for `datname` whose client socket belongs to this PgBouncer process."""
    import psutil

    try:
        socks = psutil.Process(bouncer.proc.pid).net_connections(kind="tcp")
    except psutil.Error:
        return 0
    ports = [c.laddr.port for c in socks if c.raddr and c.raddr.port == bouncer.pg_port]
    if not ports:
        return 0
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        " AND datname = %s AND client_port = ANY(%s)"
    )
    return query(admin_dsn, sql, [datname, ports])[0][0]


def service_dirs(pid: int) -> set[str]:
    """The temporary directories of the PostgreSQL (-D DIR/data) and PgBouncer (DIR/pgbouncer.ini) processes
    that process `pid` started (its descendants), read from their command lines while they run."""
    import psutil

    dirs = set()
    for p in psutil.Process(pid).children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "-D" in cmd[:-1]:
            dirs.add(str(Path(cmd[cmd.index("-D") + 1]).parent))
        dirs.update(str(Path(a).parent) for a in cmd if a.endswith("pgbouncer.ini"))
    return dirs


def connbench_here(*argv: str) -> tuple[int, str, str]:
    """`connbench ARGV` in this process (no subprocess: for commands that only read files): (exit code, stdout,
    stderr)."""
    import contextlib
    import io

    from benchmarks.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()
