"""The python family's service: the HTTP contract every family serves (targets/contract.py) around one
strategy chosen from settings.

Run it with `connbench serve TARGET` (uvicorn, as this family's family.toml says; `--workers N` for several
processes). The target id and DSN come from CONNBENCH_TARGET and CONNBENCH_DSN so the same factory serves
every worker and container."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from targets.contract import DEFAULT_DSN, WORLD_ROWS, Settings, db_params
from targets.python.drivers import OPENED, Conn, sqlstate_of
from targets.python.strategies import build_strategy
from targets.python.timing import ACQUIRE, QUERY
from targets.registry import BUILT_IN


def error_body(exc: BaseException) -> dict[str, Any]:
    """The 503 body: the exception class names the failure, SQLSTATE says what PostgreSQL said."""
    sqlstate = sqlstate_of(exc)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return {"error": type(exc).__name__, "sqlstate": sqlstate, "detail": detail[:300]}


def create_app(target_id: str | None = None, dsn: str | None = None) -> Starlette:
    """Build the ASGI app for one target (defaults from CONNBENCH_TARGET / CONNBENCH_DSN)."""
    target = BUILT_IN.get_target(target_id or os.environ.get("CONNBENCH_TARGET", ""))
    dsn = dsn or os.environ.get("CONNBENCH_DSN") or DEFAULT_DSN
    settings = Settings.from_env()
    strategy = build_strategy(target.id, dsn, settings)
    state: dict[str, Any] = {
        "started_at": time.time(),
        "ready_at": None,
        "requests": 0,
        "errors": Counter(),
        "shutdown_logged": None,
    }

    async def exit_hook(conn: Conn) -> None:
        await conn.log_shutdown(target.id, os.getpid())

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await strategy.startup()
        state["ready_at"] = time.time()
        yield
        # uvicorn has stopped accepting and drained in-flight requests: run the exit hook, then release.
        try:
            await asyncio.wait_for(strategy.run(exit_hook), settings.shutdown_timeout)
            state["shutdown_logged"] = True
        except Exception as exc:
            state["shutdown_logged"] = False
            print(f"connbench: exit hook failed: {error_body(exc)}", flush=True)
        await strategy.shutdown()

    async def db(request: Request) -> JSONResponse:
        try:
            work_s, hold = db_params(dict(request.query_params))
        except ValueError as exc:
            return JSONResponse({"error": "BadRequest", "sqlstate": None, "detail": str(exc)}, status_code=400)
        state["requests"] += 1
        world_id = random.randint(1, WORLD_ROWS)

        async def work(conn: Conn) -> tuple[int, int]:
            asked = time.perf_counter()
            row = await conn.fetch_world(world_id)
            QUERY.add(time.perf_counter() - asked)
            if hold and work_s:
                await asyncio.sleep(work_s)
            return row

        async def handle() -> tuple[int, int]:
            row = await strategy.run(work)
            if not hold and work_s:
                await asyncio.sleep(work_s)
            return row

        try:
            row_id, number = await asyncio.wait_for(handle(), settings.request_timeout)
        except Exception as exc:
            body = error_body(exc)
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
                "pool": strategy.figures(),
                "acquire_ms": ACQUIRE.as_dict(),
                "query_ms": QUERY.as_dict(),
                "settings": settings.as_dict(),
            }
        )

    routes = [
        Route("/db", db),
        Route("/health", health),
        Route("/ready", ready),
        Route("/stats", stats),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
