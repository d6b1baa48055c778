"""The django family's views: the HTTP contract (targets/contract.py) as sync Django views, the URLconf
(settings.ROOT_URLCONF) and the WSGI application gunicorn serves (gunicorn_conf.py).

GET /db is written as a Django developer writes it: `connection.cursor()` is where Django gets its
connection (connects with CONN_MAX_AGE = 0, health-checks a persistent one, takes one from the pool): the time
it takes is `acquire_ms`; the statement and its row are `query_ms`. Django gives a request's connection back
only when the request ends (its request_finished handler, `close_old_connections`: closed with CONN_MAX_AGE = 0,
returned to the pool, kept by its thread when persistent), so:
- hold=1: the work (a sleep) runs with the connection held, which is what a sync Django view always does;
- hold=0: the view calls `close_old_connections()` itself after the query, the same call Django makes when the
  request ends, so the connection is closed or back in the pool during the work. A persistent connection
  stays with its thread: Django binds it to the thread, and no other request could have used it.

request_timeout: nothing can cancel a sync view from outside, so it is honoured step by step. Getting the
connection is bounded by connect_timeout or the pool's timeout, the statement by PostgreSQL's
statement_timeout (set to request_timeout at connect, settings.py; not through PgBouncer), the work's sleep
ends at the deadline. A request past its deadline answers 503 TimeoutError (with the SQLSTATE, if any, of
what stopped it).

/stats is the process's own: with several gunicorn workers each answers for itself (pid), as uvicorn's
workers do for the python family (benchmarks/load/targetstats.py).
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections import Counter
from typing import Any

from django.core.wsgi import get_wsgi_application
from django.db import Error as DjangoDatabaseError
from django.db import close_old_connections, connection
from django.db.backends.signals import connection_created
from django.http import HttpRequest, JsonResponse
from django.urls import path

from targets.contract import WORLD_ROWS, WORLD_SQL, db_params
from targets.django.settings import CONNBENCH, TARGET
from targets.families import target
from targets.python.drivers import OpenedCounter, sqlstate_of
from targets.python.timing import ACQUIRE, QUERY

WORLD_QUERY = WORLD_SQL.format(id="%s")
SHUTDOWN_INSERT = "INSERT INTO shutdown_log (target, pid) VALUES (%s, %s)"

TARGET_INFO = target(TARGET)
OPENED = OpenedCounter()  # connections Django opened (without a pool; the pool counts its own)
WRAPPERS: weakref.WeakSet[Any] = weakref.WeakSet()  # every thread's Django connection, for the exit hook
_lock = threading.Lock()
STATE: dict[str, Any] = {
    "started_at": float(os.environ.get("CONNBENCH_STARTED_AT") or time.time()),  # `connbench serve`'s start
    "ready_at": None,
    "requests": 0,
    "errors": Counter(),
}


def opened(sender: Any, connection: Any, **_kw: Any) -> None:
    """Django's connection_created signal: sent each time a thread's connection object connects. With a pool
    that is each checkout, so the pool's own statistics count its connections instead."""
    WRAPPERS.add(connection)
    if connection.pool is None:
        OPENED.add()


connection_created.connect(opened)


def error_body(exc: BaseException) -> dict[str, Any]:
    """The 503 body: the driver's exception (Django wraps psycopg's and psycopg_pool's in its own classes, with
    the original as __cause__) and the SQLSTATE PostgreSQL answered."""
    if isinstance(exc, DjangoDatabaseError) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    detail = text.splitlines()[0] if text else repr(exc)
    return {"error": type(exc).__name__, "sqlstate": sqlstate_of(exc), "detail": detail[:300]}


def fetch_world(world_id: int) -> tuple[int, int]:
    asked = time.perf_counter()
    with connection.cursor() as cursor:
        ACQUIRE.add(time.perf_counter() - asked)
        started = time.perf_counter()
        cursor.execute(WORLD_QUERY, [world_id])
        row = cursor.fetchone()
        QUERY.add(time.perf_counter() - started)
    return row[0], row[1]


def work_until(seconds: float, deadline: float) -> None:
    """The slow non-database work (a sleep), cut at the request's deadline."""
    left = deadline - time.monotonic()
    time.sleep(max(0.0, min(seconds, left)))
    if seconds > left:
        raise TimeoutError(f"request_timeout ({CONNBENCH.request_timeout:g} s) reached")


def db(request: HttpRequest) -> JsonResponse:
    try:
        work_s, hold = db_params(request.GET.dict())
    except ValueError as exc:
        return JsonResponse({"error": "BadRequest", "sqlstate": None, "detail": str(exc)}, status=400)
    with _lock:
        STATE["requests"] += 1
    deadline = time.monotonic() + CONNBENCH.request_timeout
    try:
        row_id, number = fetch_world(random.randint(1, WORLD_ROWS))
        if not hold:
            close_old_connections()  # what Django does when the request ends: release the connection now
        if work_s:
            work_until(work_s, deadline)
    except Exception as exc:
        body = error_body(exc)
        if time.monotonic() >= deadline:
            body["error"] = "TimeoutError"  # e.g. QueryCanceled (57014): statement_timeout is request_timeout
        with _lock:
            STATE["errors"][body["error"]] += 1
        return JsonResponse(body, status=503)
    return JsonResponse({"id": row_id, "randomNumber": number})


def health(_request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def ready(_request: HttpRequest) -> JsonResponse:
    if STATE["ready_at"] is None:
        return JsonResponse({"ready": False}, status=503)
    return JsonResponse({"ready": True})


def pool_figures() -> dict[str, Any]:
    pool = connection.pool
    if pool is None:
        return {"connections_open": sum(1 for w in list(WRAPPERS) if w.connection is not None)}
    stats = pool.get_stats()
    return {
        "pool_size": stats.get("pool_size", 0),
        "pool_idle": stats.get("pool_available", 0),
        "pool_max": pool.max_size,
        "pool_waiting": stats.get("requests_waiting", 0),
    }


def connections_opened() -> int:
    pool = connection.pool
    if pool is None:
        return OPENED.value
    stats = pool.get_stats()
    return stats.get("connections_num", 0) - stats.get("connections_errors", 0)


def stats(_request: HttpRequest) -> JsonResponse:
    with _lock:
        requests, errors = STATE["requests"], dict(STATE["errors"])
    return JsonResponse(
        {
            "target": TARGET_INFO.id,
            "strategy": TARGET_INFO.strategy,
            "family": TARGET_INFO.family,
            "driver": TARGET_INFO.driver,
            "pid": os.getpid(),
            "started_at": STATE["started_at"],
            "ready_at": STATE["ready_at"],
            "requests": requests,
            "errors": errors,
            "connections_opened": connections_opened(),
            "pool": pool_figures(),
            "acquire_ms": ACQUIRE.as_dict(),
            "query_ms": QUERY.as_dict(),
            "settings": CONNBENCH.as_dict(),
        }
    )


def exit_hook() -> None:
    """The SIGTERM exit hook, run by gunicorn's worker_exit in each worker once it has stopped serving: the
    shutdown_log row through the strategy's own connection, then every connection of the process closed
    (Django closes a thread's connection only from that thread, or once it is marked as shared)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(SHUTDOWN_INSERT, [TARGET, os.getpid()])
        print(f"connbench: exit hook logged ({TARGET}, pid {os.getpid()})", flush=True)
    except Exception as exc:
        print(f"connbench: exit hook failed: {error_body(exc)}", flush=True)
    for wrapper in list(WRAPPERS):
        try:
            wrapper.inc_thread_sharing()  # a gthread thread's connection; that thread is idle or gone
            wrapper.close()
        except Exception as exc:
            print(f"connbench: closing a connection failed: {error_body(exc)}", flush=True)
    if connection.pool is not None:
        connection.close_pool()


urlpatterns = [
    path("db", db),
    path("health", health),
    path("ready", ready),
    path("stats", stats),
]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "targets.django.settings")
application = get_wsgi_application()
STATE["ready_at"] = time.time()
