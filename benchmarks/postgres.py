"""Embedded PostgreSQL: a throw-away cluster on a free loopback port, seeded with the World table.

The suite starts its own server so that every run sees the same settings and so that fault scenarios can
restart it or lower `max_connections`. Targets connect as the non-superuser role `connbench` to the database
`connbench`; the harness connects as `postgres` to the database `postgres`, so superuser-reserved slots keep
the sampler working at the connection cap and `pg_stat_database.sessions` of `connbench` counts only targets.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from benchmarks.errors import ConnbenchError
from benchmarks.procs import (
    Managed,
    check_port_free,
    die_with_parent,
    free_port,
    log_tail,
    make_service_dir,
    service_user,
    stop_process,
)

INIT_SQL = Path(__file__).with_name("sql") / "init.sql"
DB_NAME = "connbench"
DB_USER = "connbench"
# A benchmark of connection handling, not of durability: skip fsync so the disk does not add noise.
BASE_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
}
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def find_bindir() -> Path:
    """Where `postgres` and `initdb` live: $CONNBENCH_PG_BINDIR, PATH, pg_config, Debian's dirs, pgserver."""
    candidates: list[Path] = []
    override = os.environ.get("CONNBENCH_PG_BINDIR")
    if override is not None:
        candidates.append(Path(override))
    else:
        which = shutil.which("initdb")
        if which:
            candidates.append(Path(which).resolve().parent)
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
            if out.returncode == 0:
                candidates.append(Path(out.stdout.strip()))
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
        candidates += [Path(p) for p in debian]
        spec = importlib.util.find_spec("pgserver")
        if spec and spec.origin:
            candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for bindir in candidates:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    raise ConnbenchError(
        "no PostgreSQL server binaries found (looked in "
        + (", ".join(str(c) for c in candidates) or "PATH")
        + "): install Debian's postgresql package or `pip install pgserver`, or set CONNBENCH_PG_BINDIR"
    )


def server_version(bindir: Path | None = None) -> str:
    bindir = bindir or find_bindir()
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.split()[2]  # "postgres (PostgreSQL) 15.18 (Debian ...)"


class EmbeddedPostgres(Managed):
    """One PostgreSQL cluster in a temporary directory; a context manager that always cleans up."""

    def __init__(
        self,
        port: int | None = None,
        max_connections: int = 100,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = find_bindir()
        if port is not None:
            check_port_free(port, "PostgreSQL")
        self.port = port or free_port()
        self.settings = {**BASE_SETTINGS, "max_connections": str(max_connections), **(settings or {})}
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    # -- addresses -------------------------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        """What targets use: the `connbench` role on the `connbench` database."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def admin_dsn(self) -> str:
        """What the harness uses: superuser on the `postgres` database (not counted as a target session)."""
        return self.superuser_dsn("postgres")

    def superuser_dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    # -- lifecycle -------------------------------------------------------------------------------------
    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, user=service_user(), cwd=self.dir)

    def start(self) -> None:
        """initdb (first time only), launch the server, wait until it answers, seed (first time only)."""
        first = self.dir is None
        if first:
            self.dir = make_service_dir("connbench-pg-")
            out = self._run(
                [str(self.bindir / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-sync"]
            )  # fmt: skip
            if out.returncode != 0:
                raise ConnbenchError(f"initdb failed: {(out.stderr or out.stdout).strip().splitlines()[-1]}")
        self._launch()
        if first:
            self._seed()

    def _launch(self) -> None:
        assert self.dir is not None
        args = [str(self.bindir / "postgres"), "-D", str(self.dir / "data"), "-p", str(self.port),
                "-c", f"unix_socket_directories={self.dir}"]  # fmt: skip
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            # Own session: a Ctrl-C in the terminal must not reach the server before we stop it ourselves.
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=service_user(),
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGQUIT),  # immediate shutdown if connbench dies
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ConnbenchError(
                    f"PostgreSQL failed to start (exit {self.proc.returncode}); log:\n" + log_tail(self.log_path)
                )
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2, application_name="connbench:harness"):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise ConnbenchError(
            f"PostgreSQL did not accept connections in {timeout:.0f} s; log:\n{log_tail(self.log_path)}"
        )

    def _seed(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {DB_USER} LOGIN")
            conn.execute(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
        with psycopg.connect(self.dsn, autocommit=True, application_name="connbench:harness") as conn:
            conn.execute(INIT_SQL.read_text())

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the server: smart (wait for clients), fast (disconnect clients) or immediate (crash-like)."""
        stop_process(self.proc, STOP_SIGNALS[mode], timeout)
        self.proc = None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self._launch()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> None:
        """Stop the server (immediately if it will not go) and remove its directory."""
        try:
            self.stop("fast", timeout=10)
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def version(self) -> str:
        return server_version(self.bindir)
