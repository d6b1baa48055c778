"""The python family's connection strategies; its targets are every strategy with every driver.

A strategy has three hooks (`startup`, `connection`, `shutdown`) and `run`, which runs one request's
database work and times how long getting its connection took (timing.py); app.py only ever calls
these, so it never branches on a strategy's name. The edge strategies override `run` to put each request in
its own event loop, as an edge runtime puts it in its own context.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeVar

from targets.contract import Settings
from targets.python.drivers import DRIVERS, Conn, Driver, Pool
from targets.python.timing import ACQUIRE
from targets.target import Target

T = TypeVar("T")
Work = Callable[[Conn], Awaitable[T]]


# -- strategies ----------------------------------------------------------------------------------------
class Strategy:
    name: ClassVar[str]
    summary: ClassVar[str]
    via_pgbouncer: ClassVar[bool] = False
    # Opens a new PostgreSQL session for every request (the harness checks sessions >= requests).
    session_per_request: ClassVar[bool] = False

    def __init__(self, driver: Driver, dsn: str, settings: Settings) -> None:
        self.driver = driver
        self.dsn = dsn
        self.settings = settings

    async def startup(self) -> None:
        """Runs before the service reports ready."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        raise NotImplementedError
        yield  # pragma: no cover

    async def run(self, work: Work[T]) -> T:
        asked = time.perf_counter()
        async with self.connection() as conn:
            ACQUIRE.add(time.perf_counter() - asked)
            return await work(conn)

    async def shutdown(self) -> None:
        """Release every connection (after the exit hook has run)."""

    def figures(self) -> dict[str, Any]:
        return {}


class Global(Strategy):
    name = "global"
    summary = "one module-level connection opened by the first request, shared, no lock, no reconnect"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.conn: Conn | None = None
        self._opening = asyncio.Lock()  # only guards the first connect, never the queries

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        if self.conn is None:
            async with self._opening:
                if self.conn is None:
                    self.conn = await self.driver.connect(self.dsn)
        yield self.conn

    async def shutdown(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class PerRequest(Strategy):
    name = "per-request"
    summary = "connect at request start, close at the end"
    session_per_request = True

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        conn = await self.driver.connect(self.dsn)
        try:
            yield conn
        finally:
            await conn.close()


class _Pooled(Strategy):
    pool: Pool | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            yield conn

    async def shutdown(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    def figures(self) -> dict[str, Any]:
        return self.pool.figures() if self.pool is not None else {}


class PoolEager(_Pooled):
    name = "pool-eager"
    summary = "pool opened and filled (pool_min connections) before the service reports ready"

    async def startup(self) -> None:
        filled = min(self.settings.pool_min, self.settings.pool_max)  # a pool smaller than pool_min is full
        self.pool = self.driver.create_pool(self.dsn, filled, self.settings.pool_max)
        await self.pool.open(wait=True)


class PoolLazy(_Pooled):
    name = "pool-lazy"
    summary = "pool object created at startup with no connections; the first queries open them"

    async def startup(self) -> None:
        self.pool = self.driver.create_pool(self.dsn, 0, self.settings.pool_max)
        await self.pool.open(wait=False)


class Leaky(Strategy):
    name = "leaky"
    summary = "a new pool per request, never closed (a client created per call without disconnect)"
    session_per_request = True

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        pool = self.driver.create_pool(self.dsn, 1, self.settings.pool_max)
        await pool.open(wait=True)
        async with pool.acquire() as conn:
            yield conn
        # The reference is dropped here without pool.close(): whatever the driver does then is the finding.


class _Edge(Strategy):
    """An isolate-per-request runtime: each request's database work runs in a fresh event loop.

    The "isolate" is this object's state; an unhandled error tears it down (drops the global client), as an
    edge runtime discards an isolate after an exception. Inside the isolate, `connection()` and the timing
    are the base class's.
    """

    async def run(self, work: Work[T]) -> T:
        return await asyncio.to_thread(self._in_isolate, work)

    def _in_isolate(self, work: Work[T]) -> T:
        try:
            # A new event loop for this request only, with the wall-time limit an edge runtime puts on a
            # request: past it the isolate is torn down, so no thread outlives its request.
            return asyncio.run(asyncio.wait_for(Strategy.run(self, work), self.settings.request_timeout))
        except BaseException:
            self._reset_isolate()
            raise

    def _reset_isolate(self) -> None:
        pass


class EdgeGlobal(_Edge):
    name = "edge-global"
    summary = "isolate per request; one global client reused across requests; an error resets the isolate"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.client: Conn | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        if self.client is None:
            self.client = await self.driver.connect(self.dsn)
        yield self.client

    def _reset_isolate(self) -> None:
        self.client = None  # the isolate and its globals are gone; its socket is not closed by anyone

    async def shutdown(self) -> None:
        if self.client is not None:
            try:
                self.client.terminate()
            except Exception:
                pass


class EdgePerRequest(_Edge):
    name = "edge-per-request"
    summary = "isolate per request with a fresh client per request, closed at the end"
    session_per_request = True

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        conn = await self.driver.connect(self.dsn)
        try:
            yield conn
        finally:
            await conn.close()


class PgBouncerStrategy(PerRequest):
    name = "pgbouncer"
    summary = "per-request connect through PgBouncer in transaction mode"
    via_pgbouncer = True
    session_per_request = False  # PostgreSQL sees PgBouncer's pooled server sessions


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (Global, PerRequest, PoolEager, PoolLazy, Leaky, EdgeGlobal, EdgePerRequest, PgBouncerStrategy)
}


# -- the family's targets ----------------------------------------------------------------------------
def family_targets(family: str) -> list[Target]:
    """Every strategy with every driver, as `<strategy>-<driver>` (family.toml names this function)."""
    return [
        Target(f"{s}-{d}", s, d, cls.summary, cls.via_pgbouncer, cls.session_per_request, family)
        for s, cls in STRATEGIES.items()
        for d in DRIVERS
    ]


def build_strategy(target_id: str, dsn: str, settings: Settings) -> Strategy:
    """The strategy object of a python target (`<strategy>-<driver>`), its driver named after the target."""
    strategy, _, driver = target_id.rpartition("-")
    if strategy not in STRATEGIES or driver not in DRIVERS:
        raise ValueError(f"{target_id!r} is not a target of the python family")
    cls = STRATEGIES[strategy]
    conn = DRIVERS[driver](
        app_name=f"connbench:{target_id}",
        connect_timeout=settings.connect_timeout,
        pool_timeout=settings.pool_timeout,
        pooler=cls.via_pgbouncer,
        idle_timeout=settings.idle_timeout,
        tcp_keepalive=settings.tcp_keepalive,
        tcp_user_timeout=settings.tcp_user_timeout,
        pool_check=bool(settings.pool_check),
    )
    return cls(conn, dsn, settings)
