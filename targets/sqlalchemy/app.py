"""The sqlalchemy family's service: the HTTP contract (targets/contract.py) as a FastAPI-style service serves it
with SQLAlchemy's async engine, one engine per process, its pool chosen by the strategy (engine.py).

Run it with `connbench serve sqlalchemy-<strategy>` (uvicorn, as family.toml says; `--workers N` for several
processes). The target id and DSN come from CONNBENCH_TARGET and CONNBENCH_DSN so the same factory serves
every worker and container. What the python family already has is imported from it: the 503 body, the
connection counter and the two /stats histograms.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from targets.contract import DEFAULT_DSN, WORLD_ROWS, WORLD_SQL, Settings, db_params
from targets.python.app import error_body
from targets.python.drivers import OPENED
from targets.python.timing import ACQUIRE, QUERY
from targets.registry import BUILT_IN
from targets.sqlalchemy.engine import PLANS, EngineCounts, create_engine, driver_error, figures

WORLD = text(WORLD_SQL.format(id=":id"))
SHUTDOWN_INSERT = text("INSERT INTO shutdown_log (target, pid) VALUES (:target, :pid)")  # drivers.py's, named


def create_app(target_id: str | None = None, dsn: str | None = None) -> Starlette:
    """Build the ASGI app for one target (defaults from CONNBENCH_TARGET / CONNBENCH_DSN)."""
    target = BUILT_IN.get_target(target_id or os.environ.get("CONNBENCH_TARGET", ""))
    if target.family != "sqlalchemy":
        raise ValueError(f"{target.id!r} is not a target of the sqlalchemy family")
    dsn = dsn or os.environ.get("CONNBENCH_DSN") or DEFAULT_DSN
    settings = Settings.from_env()
    strategy = target.id.removeprefix("sqlalchemy-")
    engine = create_engine(strategy, dsn, settings, app_name=target.conn_key)
    counts = EngineCounts(engine, pings=PLANS[strategy].pre_ping)
    state: dict[str, Any] = {"started_at": time.time(), "ready_at": None, "requests": 0, "errors": Counter()}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state["ready_at"] = time.time()  # the pool is lazy: nothing to open before ready
        yield
        # uvicorn has stopped accepting and drained in-flight requests: the exit hook, then the pool's close.
        try:
            async with asyncio.timeout(settings.shutdown_timeout), engine.begin() as conn:
                await conn.execute(SHUTDOWN_INSERT, {"target": target.id, "pid": os.getpid()})
        except Exception as exc:
            print(f"connbench: exit hook failed: {error_body(driver_error(exc))}", flush=True)
        await engine.dispose()

    async def db(request: Request) -> JSONResponse:
        try:
            work_s, hold = db_params(dict(request.query_params))
        except ValueError as exc:
            return JSONResponse({"error": "BadRequest", "sqlstate": None, "detail": str(exc)}, status_code=400)
        state["requests"] += 1
        world_id = random.randint(1, WORLD_ROWS)

        async def handle() -> tuple[int, int]:
            asked = time.perf_counter()
            async with engine.connect() as conn:  # the pool checkout (NullPool: the connect)
                ACQUIRE.add(time.perf_counter() - asked)
                asked = time.perf_counter()
                row = (await conn.execute(WORLD, {"id": world_id})).one()
                QUERY.add(time.perf_counter() - asked)
                if hold and work_s:
                    await asyncio.sleep(work_s)
            if not hold and work_s:
                await asyncio.sleep(work_s)
            return row[0], row[1]

        try:
            row_id, number = await asyncio.wait_for(handle(), settings.request_timeout)
        except Exception as exc:
            body = error_body(driver_error(exc))
            state["errors"][body["error"]] += 1
            return JSONResponse(body, status_code=503)
        return JSONResponse({"id": row_id, "randomNumber": number})

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(_request: Request) -> JSONResponse:
        if state["ready_at"] is None:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    async def stats(_request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "target": target.id,
                "strategy": target.strategy,
                "family": target.family,
                "driver": target.driver,
                "pid": os.getpid(),
                "started_at": state["started_at"],
                "ready_at": state["ready_at"],
                "requests": state["requests"],
                "errors": dict(state["errors"]),
                "connections_opened": OPENED.value,
                "pool": figures(engine, counts),
                "acquire_ms": ACQUIRE.as_dict(),
                "query_ms": QUERY.as_dict(),
                "settings": settings.as_dict(),
            }
        )

    routes = [Route("/db", db), Route("/health", health), Route("/ready", ready), Route("/stats", stats)]
    return Starlette(routes=routes, lifespan=lifespan)
