"""The sqlalchemy family's strategies: one `create_async_engine` configuration each, and the engine's own
events counted for /stats.

`pool_max` is the QueuePool's `pool_size` with `max_overflow=0` (never more than pool_max connections),
`pool_timeout` its `pool_timeout`, `connect_timeout` asyncpg's connect `timeout`; `pool_min` has no
counterpart (a QueuePool is lazy) and `idle_timeout`, when > 0, is `pool_recycle` (else SQLAlchemy's default,
never): an age limit, not an idle one, checked at checkout, where a connection that old is closed and replaced;
SQLAlchemy's documented defence against connections a middlebox dropped while idle. `tcp_keepalive` has no
counterpart: asyncpg has no keepalive option.

Through PgBouncer in transaction mode (1.18: no prepared statements) the asyncpg dialect is set up as its
documentation says: no prepared-statement cache (`prepared_statement_cache_size=0`, so no statement is reused
on another server connection) and a unique name per prepared statement (`prepared_statement_name_func`, as
asyncpg's numbered names collide on PgBouncer's shared server connections); asyncpg's own statement cache is
off as well (`statement_cache_size=0`, asyncpg's advice for PgBouncer). SQLAlchemy runs every statement, and
its pre-ping, inside a transaction, so each statement's Parse/Bind/Execute stays on one server connection.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from targets.contract import Settings
from targets.python.drivers import OPENED, PoolTimeout


@dataclass(frozen=True)
class Plan:
    """How one strategy configures the engine."""

    null_pool: bool = False  # NullPool instead of the default (async-adapted) QueuePool
    pre_ping: bool = False
    pgbouncer: bool = False  # CONNBENCH_DSN is PgBouncer's, in transaction mode


PLANS: dict[str, Plan] = {
    "queue": Plan(),
    "pre-ping": Plan(pre_ping=True),
    "null": Plan(null_pool=True),
    "null-pgbouncer": Plan(null_pool=True, pgbouncer=True),
    "queue-pgbouncer": Plan(pgbouncer=True),
}


def async_url(dsn: str) -> str:
    """The libpq DSN connbench hands every target as SQLAlchemy's asyncpg URL: the dialect passes the query
    string to asyncpg.connect as keywords, and asyncpg names libpq's `sslmode` `ssl`."""
    url = make_url(dsn).set(drivername="postgresql+asyncpg")
    query = dict(url.query)
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return url.set(query=query).render_as_string(hide_password=False)


def statement_name() -> str:
    """A prepared statement's name, unique across every client of a PgBouncer (the dialect's documented recipe)."""
    return f"__asyncpg_{uuid.uuid4()}__"


def create_engine(strategy: str, dsn: str, settings: Settings, app_name: str) -> AsyncEngine:
    """The engine of one strategy (a key of PLANS); no connection is opened until the first checkout."""
    plan = PLANS[strategy]
    connect_args: dict[str, Any] = {
        "timeout": settings.connect_timeout,
        "server_settings": {"application_name": app_name},
    }
    if plan.pgbouncer:
        connect_args.update(
            prepared_statement_cache_size=0, prepared_statement_name_func=statement_name, statement_cache_size=0
        )
    pool_args: dict[str, Any] = (
        {"poolclass": NullPool}
        if plan.null_pool
        else {"pool_size": settings.pool_max, "max_overflow": 0, "pool_timeout": settings.pool_timeout}
    )
    if settings.idle_timeout > 0 and not plan.null_pool:
        pool_args["pool_recycle"] = settings.idle_timeout
    return create_async_engine(async_url(dsn), pool_pre_ping=plan.pre_ping, connect_args=connect_args, **pool_args)


class EngineCounts:
    """What the engine's pool did, from its events: connections opened (also drivers.OPENED, the figure every
    python target reports) and closed, and the pre-ping's statements, seen by asyncpg's query logger (the
    ping is a bare ";" asyncpg runs on the raw connection; SQLAlchemy has no event for it). The logger is
    only added when the engine pre-pings (`pings`): it also sees every BEGIN and ROLLBACK."""

    def __init__(self, engine: AsyncEngine, pings: bool) -> None:
        self.opened = self.closed = self.pings = 0
        self.count_pings = pings
        event.listen(engine.sync_engine, "connect", self._connect)
        event.listen(engine.sync_engine, "close", self._close)

    def _connect(self, dbapi_connection: Any, _record: Any) -> None:
        self.opened += 1
        OPENED.add()
        if self.count_pings:
            dbapi_connection.driver_connection.add_query_logger(self._logged)

    def _close(self, _dbapi_connection: Any, _record: Any) -> None:
        self.closed += 1

    def _logged(self, record: asyncpg.connection.LoggedQuery) -> None:
        if record.query == ";":
            self.pings += 1


def figures(engine: AsyncEngine, counts: EngineCounts) -> dict[str, Any]:
    """/stats "pool": the pool's own figures (QueuePool's status(), checkedin(), checkedout(), size()) and the
    counted ones; `pool_size` is the connections open now, `pool_max` the most the pool may hold."""
    pool = engine.sync_engine.pool
    out: dict[str, Any] = {
        "pool_class": type(pool).__name__,
        "status": pool.status(),
        "connections_open": counts.opened - counts.closed,
        "pings": counts.pings,
    }
    if isinstance(pool, QueuePool):
        out.update(
            pool_size=pool.checkedin() + pool.checkedout(),
            pool_idle=pool.checkedin(),
            checked_out=pool.checkedout(),
            pool_max=pool.size(),  # max_overflow is 0
        )
    else:
        out.update(pool_size=counts.opened - counts.closed, pool_idle=0, pool_max=None)
    return out


def driver_error(error: BaseException) -> BaseException:
    """The exception a 503 names: asyncpg's own behind SQLAlchemy's DBAPIError wrapper (2.1 wraps it twice:
    `driver_exception` unwraps both), PoolTimeout for QueuePool's checkout timeout (sqlalchemy.exc.TimeoutError,
    not the request's own TimeoutError), anything else as it is."""
    if isinstance(error, exc.TimeoutError):
        return PoolTimeout(str(error).splitlines()[0])
    if isinstance(error, exc.DBAPIError) and error.orig is not None:
        return error.driver_exception
    return error
