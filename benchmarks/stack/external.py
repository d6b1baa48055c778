"""An existing PostgreSQL (`--dsn`) in place of the embedded one.

connbench neither starts, restarts nor reconfigures it: scenarios that would (db-restart, a cap on
max_connections, server settings) are skipped with the reason. It only creates what the targets need when
absent, from the one copy of the World SQL (benchmarks/sql/init.sql: `world` and `shutdown_log`, both
`IF NOT EXISTS`), and never drops or changes anything it did not create. The sampler reads
pg_stat_activity with the same role, so that role needs pg_monitor (pg_read_all_stats) to see the sessions
of other roles; it connects to the `postgres` database when it may, so that its own sessions are not counted
in the measured database's `pg_stat_database.sessions`. The DSN's password is never printed (`redact`).
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks.errors import ConnbenchError
from benchmarks.stack.postgres import INIT_SQL, EmbeddedPostgres, redact

HARNESS_APP = "connbench:harness"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ExternalPostgres:
    """The database of a DSN, with the attributes of EmbeddedPostgres the run uses; a no-op context manager."""

    tls = False
    pid = None  # its processes are not connbench's to sample

    def __init__(self, dsn: str) -> None:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ConnbenchError(f"--dsn {redact(dsn)}: not a PostgreSQL DSN ({_first_line(exc)})") from None
        self._dsn = dsn
        self.user = str(params.get("user") or "")
        self.dbname = str(params.get("dbname") or self.user)
        self.port = int(str(params.get("port") or 5432).split(",")[0])
        self.created: list[str] = []  # tables connbench created in it
        self.monitor_dsn = dsn

    # -- what EmbeddedPostgres offers ------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        return self._dsn

    def dsn_at(self, port: int) -> str:
        if port != self.port:
            raise ConnbenchError("--dsn: connbench puts no relay or PgBouncer in front of an existing database")
        return self._dsn

    @property
    def admin_dsn(self) -> str:
        return self.monitor_dsn

    def superuser_dsn(self, _dbname: str) -> str:
        """Where the harness reads the measured database (shutdown_log): the DSN's own role."""
        return self._dsn

    def running(self) -> bool:
        return True

    def restart(self, _mode: str = "fast") -> None:
        raise ConnbenchError("connbench does not restart a database it did not start (--dsn)")

    def describe(self) -> str:
        return redact(self._dsn)

    def start(self) -> None:
        self.check()

    def cleanup(self) -> None:
        """Nothing to stop: connbench did not start it."""

    def __enter__(self) -> ExternalPostgres:
        self.check()
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    # -- checks ----------------------------------------------------------------------------------------
    def _connect(self, dsn: str) -> psycopg.Connection:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5, application_name=HARNESS_APP)

    def check(self) -> None:
        """Reach the database, make sure the World table is there, find a monitor connection with the rights
        the sampler needs; each failure is one line naming the database (without its password)."""
        where = redact(self._dsn)
        try:
            conn = self._connect(self._dsn)
        except psycopg.Error as exc:
            raise ConnbenchError(f"cannot connect to PostgreSQL at {where}: {_first_line(exc)}") from None
        with conn:
            version = conn.info.server_version
            if version < 140000:
                raise ConnbenchError(f"{where}: PostgreSQL {version // 10000} is too old (connbench needs 14 or later)")
            self._ensure_tables(conn, where)
            may_monitor = conn.execute(
                "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') FROM pg_roles"
                " WHERE rolname = current_user"
            ).fetchone()
            if not (may_monitor and may_monitor[0]):
                user = conn.info.user
                raise ConnbenchError(
                    f"{where}: role {user!r} may not see other sessions in pg_stat_activity, which the sampler "
                    f"counts; GRANT pg_monitor TO {user} (or give a DSN of a role that has it)"
                )
        # The sampler's own sessions belong in another database when the role may connect to one.
        other = make_conninfo(self._dsn, dbname="postgres")
        if self.dbname != "postgres":
            try:
                self._connect(other).close()
                self.monitor_dsn = other
            except psycopg.Error:
                self.monitor_dsn = self._dsn

    def _ensure_tables(self, conn: psycopg.Connection, where: str) -> None:
        found = conn.execute("SELECT to_regclass('world'), to_regclass('shutdown_log')").fetchone()
        world, log = found if found is not None else (None, None)
        if world is not None and log is not None:
            return
        try:
            with conn.transaction():
                conn.execute(INIT_SQL.read_text())
        except psycopg.Error as exc:
            if world is None:
                raise ConnbenchError(
                    f"{where}: the database has no World table and role {conn.info.user!r} may not create it "
                    f"({_first_line(exc)}); create it with benchmarks/sql/init.sql as a role that may"
                ) from None
            return  # the World is there; without shutdown_log the shutdown scenarios leave shutdown_logged empty
        self.created = [name for name, had in (("world", world), ("shutdown_log", log)) if had is None]


# A database the harness measures: the embedded one it started, or an existing one (--dsn), alike to callers.
Database = EmbeddedPostgres | ExternalPostgres
