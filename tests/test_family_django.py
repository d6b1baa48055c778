"""The django family: Django 5.2 sync views under gunicorn's gthread worker (targets/django/), started by
`connbench serve` against the real PostgreSQL (and PgBouncer) of the test session.

What each strategy costs PostgreSQL (sessions per request), that Django's pool is reused and bounded, the
503 bodies, and the exit hook gunicorn runs in each worker on SIGTERM.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
from helpers import query, sessions, shutdown_rows, target_connections, wait_until

from targets.contract import Settings
from targets.django.gunicorn_conf import THREADS
from targets.django.settings import database
from targets.registry import BUILT_IN

IDS = ["django-per-request", "django-persistent", "django-pool", "django-per-request-pgbouncer"]
SMALL_POOL = {"CONNBENCH_POOL_MAX": "4", "CONNBENCH_POOL_MIN": "2"}  # below the threads of a worker


@pytest.fixture
def serve(serve):
    """conftest's `serve`, with the test's own HTTP connections closed at its end: gunicorn's gthread worker
    keeps an idle kept-alive connection open for up to its keepalive (2 s) before it stops."""
    started = []

    def start(target_id: str, **kw):
        started.append(serve(target_id, **kw))
        return started[-1]

    yield start
    for t in started:
        t.client.close()


def test_the_family_lists_its_four_targets() -> None:
    targets = {t.id: t for t in BUILT_IN.values() if t.family == "django"}
    assert list(targets) == IDS
    assert {t.driver for t in targets.values()} == {"psycopg"}
    assert [tid for tid, t in targets.items() if t.session_per_request] == ["django-per-request"]
    assert [tid for tid, t in targets.items() if t.via_pgbouncer] == ["django-per-request-pgbouncer"]


def test_databases_come_from_the_dsn_and_the_strategy() -> None:
    dsn = "postgresql://u:p%40ss@db.example:6543/bench?sslmode=require"
    s = Settings(pool_min=2, pool_max=7, pool_timeout=1.5, request_timeout=3)
    per_request = database(dsn, "django-per-request", s)
    assert (per_request["NAME"], per_request["USER"], per_request["PASSWORD"]) == ("bench", "u", "p@ss")
    assert (per_request["HOST"], per_request["PORT"], per_request["CONN_MAX_AGE"]) == ("db.example", "6543", 0)
    opts = per_request["OPTIONS"]
    assert opts["sslmode"] == "require" and opts["application_name"] == "connbench:django-per-request"
    assert opts["options"] == "-c statement_timeout=3000" and "pool" not in opts
    persistent = database(dsn, "django-persistent", s)
    assert persistent["CONN_MAX_AGE"] > 0 and persistent["CONN_HEALTH_CHECKS"] is True
    pool = database(dsn, "django-pool", s)
    assert pool["CONN_MAX_AGE"] == 0 and pool["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 7, "timeout": 1.5}
    bouncer = database(dsn, "django-per-request-pgbouncer", s)
    assert bouncer["DISABLE_SERVER_SIDE_CURSORS"] is True and "options" not in bouncer["OPTIONS"]
    with pytest.raises(ValueError, match="not a target of the django family"):
        database(dsn, "django-leaky", s)


def test_per_request_opens_a_session_per_request(pg, serve) -> None:
    t = serve("django-per-request")
    before, n = sessions(pg.admin_dsn), 12
    assert [t.get("/db").status_code for _ in range(n)] == [200] * n
    assert n <= sessions(pg.admin_dsn) - before <= n + 1  # ~1 session per request
    stats = t.stats()
    assert stats["connections_opened"] == n and sum(stats["acquire_ms"].values()) == n
    assert target_connections(pg.admin_dsn, "django-per-request") == 0  # closed at each request's end


@pytest.mark.parametrize(("target_id", "most"), [("django-persistent", THREADS), ("django-pool", 4)])
def test_persistent_and_pool_reuse_their_connections(target_id: str, most: int, pg, serve) -> None:
    """Over 40 requests, at most one connection per thread (persistent) or the pool's size (pool): ~0 sessions
    per request."""
    t = serve(target_id, env=SMALL_POOL)
    before, n = sessions(pg.admin_dsn), 40
    assert [t.get("/db").status_code for _ in range(n)] == [200] * n
    assert 1 <= sessions(pg.admin_dsn) - before <= most
    stats = t.stats()
    assert 1 <= stats["connections_opened"] <= most and sum(stats["acquire_ms"].values()) == n


def test_pgbouncer_opens_a_client_connection_per_request_and_no_session(pg, bouncer, serve) -> None:
    t = serve("django-per-request-pgbouncer")
    before, n = sessions(pg.admin_dsn), 12
    assert [t.get("/db").status_code for _ in range(n)] == [200] * n
    assert sessions(pg.admin_dsn) - before <= bouncer.pool_size  # PgBouncer's pooled server sessions
    assert t.stats()["connections_opened"] == n  # one connection to PgBouncer per request


def test_pool_holds_at_most_pool_max_under_32_concurrent_requests(pg, serve) -> None:
    """8 threads share a pool of 4: 32 concurrent requests that each hold their connection 50 ms wait for
    the pool instead of opening more."""
    t = serve("django-pool", env=SMALL_POOL)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, target_connections(pg.admin_dsn, "django-pool"))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        responses = [r for _ in range(3) for r in t.burst(32, "/db?work_ms=50&hold=1")]
    finally:
        done.set()
        sampler.join()
    assert Counter(r.status_code for r in responses) == Counter({200: 96})
    assert 1 <= peak <= 4
    stats = t.stats()
    assert 1 <= stats["connections_opened"] <= 4 and stats["pool"]["pool_max"] == 4
    assert stats["pool"]["pool_size"] <= 4 and sum(stats["query_ms"].values()) == 96


def test_hold_keeps_the_pooled_connection_during_the_work_and_no_hold_returns_it(serve) -> None:
    """hold=1: checked out until the request ends (Django's way); hold=0: back in the pool before the work."""
    t = serve("django-pool", env=SMALL_POOL)
    assert t.get("/db").status_code == 200  # opens the pool, which fills in the background
    idle = wait_until(lambda: (p := t.stats()["pool"])["pool_idle"] == p["pool_size"] and p["pool_size"], 10)
    for hold, idle_during_work in (("1", idle - 1), ("0", idle)):
        queries = sum(t.stats()["query_ms"].values())
        request = threading.Thread(target=t.get, args=(f"/db?work_ms=2000&hold={hold}",))
        request.start()
        wait_until(lambda: sum(t.stats()["query_ms"].values()) > queries, 10, what="the query")  # noqa: B023
        wait_until(lambda: t.stats()["pool"]["pool_idle"] == idle_during_work, 5, what=f"hold={hold}")  # noqa: B023
        assert request.is_alive(), "the request ended before its work was seen"
        request.join()


def test_503_bodies_name_the_error_class_and_sqlstate(pg, serve) -> None:
    env = {"CONNBENCH_POOL_MAX": "1", "CONNBENCH_POOL_MIN": "1", "CONNBENCH_POOL_TIMEOUT": "0.5"}
    t = serve("django-pool", env=env)
    assert t.get("/db").status_code == 200  # the pool's one connection, open before the burst
    responses = t.burst(4, "/db?work_ms=1500&hold=1")  # one holds the only connection, three wait 0.5 s
    assert sorted(r.status_code for r in responses) == [200, 503, 503, 503]
    assert {r.json()["error"] for r in responses if r.status_code == 503} == {"PoolTimeout"}
    # Django's pool hands out connections unchecked (CONN_HEALTH_CHECKS is off): a dead one fails once.
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
    assert query(pg.admin_dsn, terminate, ["connbench:django-pool"]) == [(True,)]
    body = t.get("/db").json()
    assert (body["error"], body["sqlstate"]) == ("AdminShutdown", "57P01")
    assert t.get("/db").status_code == 200
    assert t.stats()["errors"] == {"PoolTimeout": 3, "AdminShutdown": 1} and t.stats()["requests"] == 7


def test_persistent_health_check_replaces_a_dead_connection(pg, serve) -> None:
    t = serve("django-persistent")
    assert t.get("/db").status_code == 200
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
    query(pg.admin_dsn, terminate, ["connbench:django-persistent"])
    assert [t.get("/db").status_code for _ in range(3)] == [200] * 3


def test_request_timeout_and_bad_parameters(serve) -> None:
    t = serve("django-per-request", env={"CONNBENCH_REQUEST_TIMEOUT": "1"})
    r = t.get("/db?work_ms=3000&hold=1")
    assert r.status_code == 503 and r.json()["error"] == "TimeoutError"
    r = t.get("/db?hold=2")
    assert r.status_code == 400 and r.json()["error"] == "BadRequest"
    assert t.get("/health").status_code == 200 and t.get("/ready").json() == {"ready": True}


@pytest.mark.parametrize("target_id", IDS)
def test_sigterm_finishes_in_flight_requests_and_runs_the_exit_hook(target_id: str, pg, serve) -> None:
    t = serve(target_id)
    worker_pid = t.stats()["pid"]
    answered: list[int] = []

    def held() -> None:
        answered.append(httpx.get(t.url + "/db?work_ms=800&hold=1", timeout=15).status_code)

    in_flight = threading.Thread(target=held)
    in_flight.start()
    wait_until(lambda: t.stats()["requests"] >= 1, 10, what="the request to start")
    t.client.close()  # only the request in flight is left
    assert t.terminate() == 0, t.log()
    in_flight.join()
    assert answered == [200]
    assert "exit hook logged" in t.log() and "failed" not in t.log()
    assert shutdown_rows(pg.superuser_dsn("connbench"), target_id, worker_pid) == 1
    if target_id != "django-per-request-pgbouncer":  # PgBouncer keeps its server connections
        assert target_connections(pg.admin_dsn, target_id) == 0
