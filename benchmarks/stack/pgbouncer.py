"""PgBouncer in transaction mode in front of the embedded PostgreSQL (the external-pooler strategy).

Debian 12 ships PgBouncer 1.18, which cannot carry server-side prepared statements in transaction mode; the
drivers therefore run in "pooler" mode for the pgbouncer targets (see targets/drivers.py).

PgBouncer authenticates its clients with scram-sha-256 against the cluster's `connbench` password (kept in
plain text in its auth file, so that it can log in to PostgreSQL with scram too) and, when the cluster has
TLS, requires TLS from its clients and uses it towards PostgreSQL, with the cluster's certificate.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import pq

from benchmarks.errors import ConnbenchError
from benchmarks.stack.postgres import DB_NAME, DB_USER, EmbeddedPostgres
from benchmarks.stack.procs import (
    Managed,
    check_port_free,
    die_with_parent,
    free_port,
    log_tail,
    make_service_dir,
    service_ids,
    stop_process,
    wait_port,
)
from targets.families import missing_reason as family_missing_reason
from targets.registry import TARGETS, get_target
from targets.yours import UserTarget, register

DEFAULT_POOL_SIZE = 10
STOP_SIGNALS = {"fast": signal.SIGTERM, "smart": signal.SIGINT}  # PgBouncer's immediate and safe shutdown


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if Path(p).is_file()), None
    )


def missing_reason() -> str | None:
    """Why the pgbouncer strategy cannot run here, or None when it can."""
    if find_pgbouncer() is None:
        return "PgBouncer is not installed (apt-get install pgbouncer)"
    return None


def choose_targets(
    names: list[str] | None = None, yours: Sequence[UserTarget] = ()
) -> tuple[list[str], dict[str, str]]:
    """The requested built-in target ids (default: all, registry order) that can run here, and the others
    with why. With targets of the user's own (`yours`), only the built-in targets `names` names (none when it
    names none); `yours` are then added to the registry (after the choice: they belong to no buildable family).

    The pgbouncer strategy depends on this machine (the PgBouncer binary), the other families on their
    runtime and build (targets/families.py builds a family here on first use).
    """
    if yours:
        names = [n for n in names or [] if n not in {t.id for t in yours}]
        chosen = choose_targets(names) if names else ([], {})
        register(list(yours))
        return chosen
    wanted = [get_target(n).id for n in names] if names else list(TARGETS)
    reason = missing_reason()
    skipped = {t: reason for t in wanted if TARGETS[t].via_pgbouncer and reason}
    for family in dict.fromkeys(TARGETS[t].family for t in wanted):
        why = family_missing_reason(family)
        skipped.update({t: why for t in wanted if TARGETS[t].family == family and why})
    return [t for t in wanted if t not in skipped], skipped


def pgbouncer_version() -> str | None:
    binary = find_pgbouncer()
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return out.stdout.split("\n", 1)[0].replace("PgBouncer", "").strip() or None


class PgBouncer(Managed):
    """One PgBouncer process; a context manager that always stops it and removes its directory."""

    def __init__(
        self,
        pg: EmbeddedPostgres,
        port: int | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        upstream_port: int | None = None,
    ) -> None:
        """`upstream_port`: where PgBouncer reaches PostgreSQL when not directly (a relay across a distance)."""
        binary = find_pgbouncer()
        if binary is None:
            raise ConnbenchError(missing_reason() or "")
        self.binary = binary
        if port is not None:
            check_port_free(port, "PgBouncer")
        self.port = port or free_port()
        self.pg = pg
        self.pg_port = upstream_port or pg.port
        self.pool_size = pool_size
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return self.pg.dsn_at(self.port)

    def _tls_settings(self) -> str:
        if not self.pg.tls:
            return ""
        cert, key = self.pg.tls_files
        return (
            f"client_tls_sslmode = require\nclient_tls_cert_file = {cert}\nclient_tls_key_file = {key}\n"
            "server_tls_sslmode = require\n"
        )

    def start(self) -> None:
        self.dir = make_service_dir("connbench-pgb-")
        userlist = self.dir / "userlist.txt"
        userlist.touch(mode=0o600)
        userlist.write_text(f'"{DB_USER}" "{self.pg.password}"\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            f"""[databases]
{DB_NAME} = host=127.0.0.1 port={self.pg_port} dbname={DB_NAME} user={DB_USER}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.dir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits,statement_timeout
logfile = {self.dir / "pgbouncer.log"}
pidfile = {self.dir / "pgbouncer.pid"}
admin_users = {DB_USER}
{self._tls_settings()}"""
        )
        ids = service_ids()
        for f in self.dir.iterdir():
            if ids:
                shutil.chown(f, user=ids["user"], group=ids["group"])
        self._launch()

    def _launch(self) -> None:
        assert self.dir is not None
        self.proc = subprocess.Popen(
            [self.binary, str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGINT),
            **service_ids(),
        )
        if not wait_port(self.port, 15, self.proc):
            raise ConnbenchError(f"PgBouncer failed to start; log:\n{log_tail(self.dir / 'pgbouncer.log')}")

    def restart(self, mode: str = "fast") -> None:
        """Stop PgBouncer (fast: SIGTERM, its immediate shutdown; smart: SIGINT, its safe shutdown, which
        waits for server connections to be released) and start it again on the same port."""
        stop_process(self.proc, STOP_SIGNALS[mode], 10)
        self._launch()

    def console(self, command: str) -> None:
        """Run a command on PgBouncer's admin console (PAUSE, RESUME): simple protocol, as the console needs."""
        with psycopg.connect(self.pg.dsn_at(self.port).replace(f"/{DB_NAME}?", "/pgbouncer?"), autocommit=True) as c:
            result = c.pgconn.exec_(command.encode())
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise ConnbenchError(f"PgBouncer {command}: {result.error_message.decode(errors='replace').strip()}")

    def cleanup(self) -> None:
        try:
            stop_process(self.proc, signal.SIGINT, 10)  # SIGINT: PgBouncer's "safe shutdown"
            self.proc = None
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None
