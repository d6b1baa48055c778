"""asyncpg and psycopg behind one small interface, so strategies never branch on the driver.

`pooler=True` is for connections that go through PgBouncer in transaction mode (1.18 has no
prepared-statement support): asyncpg gets no statement cache and runs the query inside an explicit
transaction, so its Parse/Bind/Execute cannot be split across server connections; psycopg never prepares.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import psycopg
import psycopg_pool

from targets.contract import TOO_MANY_MESSAGES, WORLD_SQL, libpq_tcp

WORLD_QUERY = WORLD_SQL.format(id="$1")
SHUTDOWN_INSERT = "INSERT INTO shutdown_log (target, pid) VALUES ($1, $2)"


class OpenedCounter:
    """Connections this process opened; counted by the driver so every strategy is measured alike."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1


OPENED = OpenedCounter()


class Conn(abc.ABC):
    """One driver connection, as a strategy hands it to a request."""

    @abc.abstractmethod
    async def fetch_world(self, world_id: int) -> tuple[int, int]: ...

    @abc.abstractmethod
    async def log_shutdown(self, target: str, pid: int) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def terminate(self) -> None:
        """Close the socket without the event loop (for clients whose loop is gone)."""


class PoolTimeout(TimeoutError):
    """No pooled connection came free in time: asyncpg raises a bare TimeoutError, psycopg_pool its own
    PoolTimeout; both drivers answer with this class name, apart from the request's own TimeoutError."""


class Pool(abc.ABC):
    @abc.abstractmethod
    async def open(self, wait: bool) -> None: ...

    @abc.abstractmethod
    def acquire(self) -> Any:
        """An async context manager yielding a Conn."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def figures(self) -> dict[str, int]: ...


class Driver(abc.ABC):
    name: str

    def __init__(
        self,
        app_name: str,
        connect_timeout: float,
        pool_timeout: float,
        pooler: bool = False,
        idle_timeout: float = 0,
        tcp_keepalive: float = 0,
        tcp_user_timeout: float = 0,
        pool_check: bool = False,
    ):
        self.app_name = app_name
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self.pooler = pooler
        self.idle_timeout = idle_timeout  # > 0: the pools' idle limit (asyncpg's and psycopg_pool's own otherwise)
        self.tcp_keepalive = tcp_keepalive  # > 0: seconds idle before the first keepalive probe (psycopg only)
        self.tcp_user_timeout = tcp_user_timeout  # > 0: seconds sent data may stay unacknowledged (psycopg only)
        self.pool_check = pool_check  # check a pooled connection before handing it out (psycopg_pool only)

    @abc.abstractmethod
    async def connect(self, dsn: str) -> Conn: ...

    @abc.abstractmethod
    def create_pool(self, dsn: str, min_size: int, max_size: int) -> Pool: ...


# -- asyncpg -------------------------------------------------------------------------------------------
class AsyncpgConn(Conn):
    def __init__(self, conn: asyncpg.Connection, pooler: bool) -> None:
        self.raw = conn
        self.pooler = pooler

    async def fetch_world(self, world_id: int) -> tuple[int, int]:
        if self.pooler:
            async with self.raw.transaction():
                row = await self.raw.fetchrow(WORLD_QUERY, world_id)
        else:
            row = await self.raw.fetchrow(WORLD_QUERY, world_id)
        return row[0], row[1]

    async def log_shutdown(self, target: str, pid: int) -> None:
        await self.raw.execute(SHUTDOWN_INSERT, target, pid)

    async def close(self) -> None:
        await self.raw.close(timeout=5)

    def terminate(self) -> None:
        self.raw.terminate()


class AsyncpgPool(Pool):
    def __init__(self, driver: AsyncpgDriver, dsn: str, min_size: int, max_size: int) -> None:
        self.driver = driver

        async def counted(_conn: asyncpg.Connection) -> None:
            OPENED.add()

        # asyncpg closes a connection idle for max_inactive_connection_lifetime (default 300 s) only while the
        # pool holds more than min_size (0.32; earlier versions closed every idle one): pool-eager's is kept.
        idle: dict[str, Any] = {}
        if driver.idle_timeout > 0:
            idle["max_inactive_connection_lifetime"] = driver.idle_timeout
        self.raw = asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=counted,
            **idle,
            **driver.connect_kwargs(),
        )

    async def open(self, wait: bool) -> None:
        # asyncpg opens min_size connections when the pool is awaited; there is no background filling.
        await self.raw

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        try:
            conn = await self.raw.acquire(timeout=self.driver.pool_timeout)
        except TimeoutError:
            raise PoolTimeout(f"no connection free within {self.driver.pool_timeout} s") from None
        try:
            yield AsyncpgConn(conn, self.driver.pooler)
        finally:
            await self.raw.release(conn)

    async def close(self) -> None:
        await self.raw.close()

    def figures(self) -> dict[str, int]:
        return {
            "pool_size": self.raw.get_size(),
            "pool_idle": self.raw.get_idle_size(),
            "pool_max": self.raw.get_max_size(),
        }


class AsyncpgDriver(Driver):
    name = "asyncpg"

    def connect_kwargs(self) -> dict[str, Any]:
        # asyncpg has no keepalive or TCP_USER_TIMEOUT option (tcp_keepalive and tcp_user_timeout do nothing
        # here): its sockets keep the OS's defaults.
        kw: dict[str, Any] = {
            "timeout": self.connect_timeout,
            "server_settings": {"application_name": self.app_name},
        }
        if self.pooler:
            kw["statement_cache_size"] = 0
        return kw

    async def connect(self, dsn: str) -> Conn:
        conn = await asyncpg.connect(dsn, **self.connect_kwargs())
        OPENED.add()
        return AsyncpgConn(conn, self.pooler)

    def create_pool(self, dsn: str, min_size: int, max_size: int) -> Pool:
        return AsyncpgPool(self, dsn, min_size, max_size)


# -- psycopg -------------------------------------------------------------------------------------------
def _pg_format(query: str) -> str:
    return query.replace("$1", "%s").replace("$2", "%s")


class PsycopgConn(Conn):
    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.raw = conn

    async def fetch_world(self, world_id: int) -> tuple[int, int]:
        cur = await self.raw.execute(_pg_format(WORLD_QUERY), (world_id,))
        row = await cur.fetchone()
        assert row is not None
        return row[0], row[1]

    async def log_shutdown(self, target: str, pid: int) -> None:
        await self.raw.execute(_pg_format(SHUTDOWN_INSERT), (target, pid))

    async def close(self) -> None:
        await self.raw.close()

    def terminate(self) -> None:
        self.raw.pgconn.finish()


class PsycopgPool(Pool):
    def __init__(self, driver: PsycopgDriver, dsn: str, min_size: int, max_size: int) -> None:
        self.driver = driver

        async def counted(_conn: psycopg.AsyncConnection) -> None:
            OPENED.add()

        # psycopg_pool closes a connection idle for max_idle (default 600 s) only while the pool holds more
        # than min_size, one per max_idle at most: pool-eager's (min_size = max_size) are kept.
        idle: dict[str, Any] = {"max_idle": driver.idle_timeout} if driver.idle_timeout > 0 else {}
        if driver.pool_check:  # an empty query's round trip on every checkout; a dead connection is replaced
            idle["check"] = psycopg_pool.AsyncConnectionPool.check_connection
        self.raw = psycopg_pool.AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs=driver.connect_kwargs(),
            configure=counted,
            timeout=driver.pool_timeout,
            open=False,
            **idle,
        )

    async def open(self, wait: bool) -> None:
        # Filling the pool is connecting, so a short pool_timeout (how long a request may queue) must not fail
        # it, and each connection gets connect_timeout, as asyncpg's create_pool gives each of the ones it
        # opens all at once. psycopg_pool opens them num_workers (3) at a time: an eager pool of 10 fills in 4
        # rounds, which a whole Docker stack starting on 2 cores can stretch past one connect_timeout.
        rounds = -(-self.raw.min_size // self.raw.num_workers)
        fill = max(self.driver.pool_timeout, self.driver.connect_timeout * max(rounds, 1))
        await self.raw.open(wait=wait, timeout=fill)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        async with self.raw.connection() as conn:
            yield PsycopgConn(conn)

    async def close(self) -> None:
        await self.raw.close()

    def figures(self) -> dict[str, int]:
        stats = self.raw.get_stats()
        return {
            "pool_size": stats.get("pool_size", 0),
            "pool_idle": stats.get("pool_available", 0),
            "pool_max": stats.get("pool_max", self.raw.max_size),
        }


class PsycopgDriver(Driver):
    name = "psycopg"

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "application_name": self.app_name,
            # libpq's connect_timeout is whole seconds, at least 2.
            "connect_timeout": max(2, round(self.connect_timeout)),
            # None: never prepare server-side (psycopg's default prepares a query after 5 runs).
            "prepare_threshold": None if self.pooler else 5,
            **libpq_tcp(self.tcp_keepalive, self.tcp_user_timeout),
        }

    async def connect(self, dsn: str) -> Conn:
        conn = await psycopg.AsyncConnection.connect(dsn, **self.connect_kwargs())
        OPENED.add()
        return PsycopgConn(conn)

    def create_pool(self, dsn: str, min_size: int, max_size: int) -> Pool:
        return PsycopgPool(self, dsn, min_size, max_size)


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE behind a driver's exception, also for psycopg's refused connections."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None and any(m in str(exc) for m in TOO_MANY_MESSAGES):
        sqlstate = "53300"
    return sqlstate


DRIVERS: dict[str, type[Driver]] = {"asyncpg": AsyncpgDriver, "psycopg": PsycopgDriver}
