"""`connbench up`: the whole stack as local processes, with the Locust web UI, for interactive use.

An embedded PostgreSQL, PgBouncer in front of it when installed, every runnable target under
`connbench serve` on a free loopback port (the pgbouncer targets through PgBouncer), and Locust with its web
UI (one User class per target in the class picker, the connection panel of benchmarks/load/panel.py). Your
own services join them: a target file's command is started like a target, a --url service is only added to
the UI and the panel (instead of the built-in targets unless --targets names some). Optionally
Locust runs as a master with local worker processes. Ctrl-C or SIGTERM stops everything: Locust first, then
the targets (gracefully, so their exit hooks run), PgBouncer and PostgreSQL; no process and no temporary
directory is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.errors import ConnbenchError
from benchmarks.load import LOCUSTFILE
from benchmarks.stack.procs import Managed, check_port_free, die_with_parent, free_port, log_tail, make_temp_dir
from benchmarks.stack.targetproc import target_command
from targets.registry import TARGETS
from targets.yours import UserTarget, child_env, running_url

if TYPE_CHECKING:
    from benchmarks.stack.external import Database
    from benchmarks.stack.network import Network


@dataclass
class Child:
    """One process of the stack, its output in a log file of the stack's directory."""

    name: str
    proc: subprocess.Popen
    log: Path
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Stack(Managed):
    """The processes of `connbench up`; a context manager that always stops them and removes its directory."""

    def __init__(
        self,
        targets: list[str] | None = None,
        web_port: int = 8089,
        max_connections: int = 100,
        pgbouncer_pool: int | None = None,
        load_workers: int = 0,
        locustfile: Path | None = None,
        ready_timeout: float = 120.0,
        say: Callable[[str], None] = print,
        rtt_ms: float = 0,
        tls: bool = False,
        pooler: str = "near-db",
        dsn: str | None = None,
        user_targets: list[UserTarget] | None = None,
    ) -> None:
        self.rtt_ms, self.tls, self.pooler = rtt_ms, tls, pooler
        self.user_targets = user_targets or []
        self.dsn = dsn  # an existing database (benchmarks/stack/external.py) instead of the embedded one
        self.requested = targets
        self.web_port = web_port
        self.max_connections = max_connections
        self.pgbouncer_pool = pgbouncer_pool
        self.load_workers = load_workers
        self.locustfile = Path(locustfile) if locustfile else LOCUSTFILE
        self.ready_timeout = ready_timeout
        self.say = say
        self.dir: Path | None = None
        self.pg: Database | None = None
        self.net: Network | None = None  # the distance and PgBouncer
        self.targets: dict[str, Child] = {}
        self.running: dict[str, str] = {}  # --url services: target -> URL (connbench did not start them)
        self.skipped: dict[str, str] = {}
        self.locust: Child | None = None
        self.workers: list[Child] = []
        self._reported_dead: set[str] = set()

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    # -- lifecycle -------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        self.stop()

    def start(self) -> None:
        from benchmarks.stack.network import Network
        from benchmarks.stack.pgbouncer import DEFAULT_POOL_SIZE, choose_targets
        from benchmarks.stack.postgres import EmbeddedPostgres, redact

        if not self.locustfile.is_file():
            raise ConnbenchError(f"no locustfile at {self.locustfile}")
        if self.load_workers < 0:
            raise ConnbenchError("--load-workers must be 0 or more")
        check_port_free(self.web_port, "the Locust web UI")
        ids, self.skipped = choose_targets(self.requested, self.user_targets)
        if self.dsn:
            why = "connbench puts no PgBouncer in front of a database it did not start (--dsn)"
            self.skipped.update({t: why for t in ids if TARGETS[t].via_pgbouncer})
            ids = [t for t in ids if t not in self.skipped]
        ids += [t.id for t in self.user_targets]
        if not ids:
            raise ConnbenchError("no target can run here: " + "; ".join(sorted(set(self.skipped.values()))))
        self.dir = make_temp_dir("connbench-up-")

        if self.dsn:
            from benchmarks.stack.external import ExternalPostgres

            if self.rtt_ms or self.tls:
                raise ConnbenchError("--rtt and --tls apply to the embedded database, not to --dsn")
            self.pg = ExternalPostgres(self.dsn)
        else:
            self.pg = EmbeddedPostgres(max_connections=self.max_connections, tls=self.tls)
        self.pg.start()
        poolers = (self.pooler,) if any(TARGETS[t].via_pgbouncer for t in ids) else ()
        pool_size = DEFAULT_POOL_SIZE if self.pgbouncer_pool is None else self.pgbouncer_pool
        self.net = Network(self.pg, self.rtt_ms, poolers, pool_size=pool_size).__enter__()
        for name, dsn in self.net.lines():
            self.say(f"{name + ':':<10} {redact(dsn)}")
        self.say(self.net.describe())

        for t in ids:  # start them all, then wait: the imports and pool fills overlap
            if url := running_url(TARGETS[t]):
                self.running[t] = url
                continue
            dsn, port = self.net.dsn(t, self.pooler), free_port(avoid=self._chosen_ports())
            cmd, own_env = target_command(t, dsn, port, 1)
            env = {**os.environ, **own_env, "CONNBENCH_DSN": dsn}  # not --dsn: no password in `ps`
            self.targets[t] = self._spawn(t, cmd, port, env)
        self._wait_targets()
        self._start_locust()

    def _chosen_ports(self) -> set[int]:
        """The ports given out already: the web UI's and the targets' (some not listening yet)."""
        return {self.web_port, *(c.port for c in self.targets.values() if c.port is not None)}

    def _spawn(self, name: str, args: list[str], port: int | None = None, env: dict | None = None) -> Child:
        assert self.dir is not None
        log = self.dir / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                args,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C reaches `connbench up` only; it stops the children in order
                preexec_fn=die_with_parent(),
            )
        return Child(name, proc, log, port)

    def _wait_targets(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        waiting = dict(self.targets)
        while waiting:
            for t, child in list(waiting.items()):
                if not child.alive():
                    raise ConnbenchError(
                        f"target {t} exited with {child.proc.returncode} while starting; log:\n{log_tail(child.log)}"
                    )
                if http_ok(child.url + TARGETS[t].ready_path, timeout=1.0):
                    del waiting[t]
            if waiting and time.monotonic() > deadline:
                t, child = next(iter(waiting.items()))
                raise ConnbenchError(
                    f"target {t} not ready after {self.ready_timeout:.0f} s; log:\n{log_tail(child.log)}"
                )
            time.sleep(0.2)

    def locust_env(self) -> dict[str, str]:
        assert self.pg is not None
        env = child_env()  # the run's own targets, for Locust's user classes
        urls = {**{t: c.url for t, c in self.targets.items()}, **self.running}
        env["CONNBENCH_TARGET_URLS"] = ",".join(f"{t}={url}" for t, url in urls.items())
        env["CONNBENCH_ADMIN_DSN"] = self.pg.admin_dsn
        env["CONNBENCH_DB_NAME"] = self.pg.dbname  # the database the panel counts
        return env

    def _start_locust(self) -> None:
        env = self.locust_env()
        base = [sys.executable, "-m", "locust", "-f", str(self.locustfile)]
        args = [*base, "--web-host", "127.0.0.1", "--web-port", str(self.web_port), "--class-picker"]
        master_port = None
        if self.load_workers:
            master_port = free_port(avoid=self._chosen_ports())
            args += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port)]
        self.locust = self._spawn("locust", args, self.web_port, env)
        for i in range(self.load_workers):
            worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]
            self.workers.append(self._spawn(f"locust-worker-{i + 1}", worker, env=env))
        deadline = time.monotonic() + 60
        while not http_ok(self.web_url + "/", timeout=1.0):
            if not self.locust.alive() or time.monotonic() > deadline:
                raise ConnbenchError(f"Locust's web UI did not start; log:\n{log_tail(self.locust.log)}")
            time.sleep(0.2)

    def describe(self) -> Iterator[str]:
        width = max(len(t) for t in [*self.targets, *self.running, *self.skipped])
        yield "targets:"
        for t, child in self.targets.items():
            yield f"  {t:<{width}}  {child.url}"
        for t, url in self.running.items():
            yield f"  {t:<{width}}  {url}  (already running)"
        for t, why in self.skipped.items():
            yield f"  {t:<{width}}  skipped: {why}"
        if self.workers:
            yield f"locust:    master with {len(self.workers)} local worker(s)"
        yield f"Locust web UI:    {self.web_url}"
        yield f"connection panel: {self.web_url}/connbench"
        assert self.dir is not None
        yield f"logs:      {self.dir} (removed on exit)"

    def watch(self, interval: float = 0.5) -> None:
        """Until interrupted: report a target that exits; fail when Locust or PostgreSQL is gone."""
        while True:
            assert self.locust is not None and self.pg is not None
            if not self.locust.alive():
                raise ConnbenchError(
                    f"Locust exited with {self.locust.proc.returncode}; log:\n{log_tail(self.locust.log)}"
                )
            if not self.pg.running():
                raise ConnbenchError("PostgreSQL exited unexpectedly")
            for child in [*self.targets.values(), *self.workers]:
                if not child.alive() and child.name not in self._reported_dead:
                    self._reported_dead.add(child.name)
                    self.say(f"# {child.name} exited with {child.proc.returncode}; log:\n{log_tail(child.log)}")
            time.sleep(interval)

    def stop(self) -> None:
        """Stop every process (Locust, targets, PgBouncer, PostgreSQL) and remove the directory."""
        with _signals_ignored():
            children = [c for c in (self.locust, *self.workers) if c is not None]
            _terminate_all(children, timeout=15)
            self.locust, self.workers = None, []
            _terminate_all(list(self.targets.values()), timeout=45)  # graceful: exit hooks run
            try:
                if self.net is not None:
                    self.net.close()
                    self.net = None
            finally:
                if self.pg is not None:
                    self.pg.cleanup()
                    self.pg = None
                if self.dir is not None:
                    shutil.rmtree(self.dir, ignore_errors=True)
                    self.dir = None


def _terminate_all(children: list[Child], timeout: float) -> None:
    """SIGTERM to all at once, then wait; SIGKILL whatever is still there after `timeout`."""
    for c in children:
        if c.alive():
            try:
                c.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for c in children:
        try:
            c.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short (only possible in the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def run_up(
    targets: list[str] | None,
    web_port: int,
    max_connections: int,
    load_workers: int,
    locustfile: str | None,
    path: tuple = (None, None, None),
    dsn: str | None = None,
    user_targets: list[UserTarget] | None = None,
) -> int:
    """`connbench up`: start, print the addresses, run until Ctrl-C / SIGTERM, stop everything.
    `path`: (rtts, tls modes, poolers) of the command line, one value each (the first pooler)."""
    rtts, tls, poolers = path
    with Stack(
        targets,
        web_port=web_port,
        max_connections=max_connections,
        load_workers=load_workers,
        locustfile=Path(locustfile) if locustfile else None,
        say=lambda line: print(line, flush=True),
        rtt_ms=rtts[0] if rtts else 0,
        tls=bool(tls and tls[0]),
        pooler=poolers[0] if poolers else "near-db",
        dsn=dsn,
        user_targets=user_targets,
    ) as stack:
        for line in stack.describe():
            print(line, flush=True)
        print("# Ctrl-C stops everything", flush=True)
        try:
            stack.watch()
        except KeyboardInterrupt:
            print("# stopping...", flush=True)
    return 0
