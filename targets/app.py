"""The target service: the HTTP contract of DESIGN.md around one strategy chosen from settings.

Run it with `connbench serve TARGET` (uvicorn; `--workers N` for several processes). The target id and
DSN come from CONNBENCH_TARGET and CONNBENCH_DSN so the same factory serves every worker and container.
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

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from targets.drivers import OPENED, Conn, sqlstate_of
from targets.strategies import Settings, build_strategy, get_target

DEFAULT_DSN = "postgresql://connbench@127.0.0.1:5432/connbench"
WORLD_ROWS = 10_000


def error_body(exc: BaseException) -> dict[str, Any]:
    """The 503 body: the exception class names the failure, SQLSTATE says what PostgreSQL said."""
    sqlstate = sqlstate_of(exc)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return {"error": type(exc).__name__, "sqlstate": sqlstate, "detail": detail[:300]}


def create_app(target_id: str | None = None, dsn: str | None = None) -> Starlette:
    """Build the ASGI app for one target (defaults from CONNBENCH_TARGET / CONNBENCH_DSN)."""
    target = get_target(target_id or os.environ.get("CONNBENCH_TARGET", ""))
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

    async def db(_request: Request) -> JSONResponse:
        state["requests"] += 1
        world_id = random.randint(1, WORLD_ROWS)

        async def work(conn: Conn) -> tuple[int, int]:
            return await conn.fetch_world(world_id)

        try:
            row_id, number = await asyncio.wait_for(strategy.run(work), settings.request_timeout)
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
                "driver": target.driver,
                "pid": os.getpid(),
                "started_at": state["started_at"],
                "ready_at": state["ready_at"],
                "requests": state["requests"],
                "errors": dict(state["errors"]),
                "connections_opened": OPENED.value,
                "pool": strategy.figures(),
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
