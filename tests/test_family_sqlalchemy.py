"""The sqlalchemy family against a real PostgreSQL (and PgBouncer): SQLAlchemy's async engine over asyncpg, each
pool as its users configure it. What PostgreSQL sees per request, what the QueuePool holds under 32 concurrent
requests, the pre-ping's extra statement, the 503 bodies and the exit hook on SIGTERM."""

from __future__ import annotations

import threading
from collections import Counter

import psycopg
import pytest
from helpers import peak_connections, query, sessions, shutdown_rows, target_connections, wait_until

from targets import families
from targets.sqlalchemy.engine import PLANS, async_url

POOL_MAX = 10
IDS = [f"sqlalchemy-{s}" for s in PLANS]
ROLLBACKS = "SELECT xact_rollback FROM pg_stat_database WHERE datname = 'connbench'"


def test_the_manifest_lists_one_target_per_engine_configuration() -> None:
    family = families.FAMILIES["sqlalchemy"]
    assert [t.id for t in family.targets] == IDS and family.app == "targets.sqlalchemy.app:create_app"
    by_id = {t.id: t for t in family.targets}
    assert {t.driver for t in family.targets} == {"asyncpg"} and family.runtime == "python"
    assert [t for t in IDS if by_id[t].session_per_request] == ["sqlalchemy-null"]
    assert [t for t in IDS if by_id[t].via_pgbouncer] == ["sqlalchemy-null-pgbouncer", "sqlalchemy-queue-pgbouncer"]
    assert all(PLANS[t.removeprefix("sqlalchemy-")].pgbouncer == by_id[t].via_pgbouncer for t in IDS)
    url = "postgresql+asyncpg://u:p@127.0.0.1:5/db?ssl=require"
    assert async_url("postgresql://u:p@127.0.0.1:5/db?sslmode=require") == url


@pytest.mark.parametrize(("strategy", "per_request"), [("null", True), ("queue", False)])
def test_sessions_per_request(strategy: str, per_request: bool, pg, serve) -> None:
    """NullPool opens a PostgreSQL session per request and closes it; the QueuePool opens one at the first
    request and reuses it."""
    tid = f"sqlalchemy-{strategy}"
    t = serve(tid)
    before, n = sessions(pg.admin_dsn), 20
    assert [t.get("/db").status_code for _ in range(n)] == [200] * n
    opened = sessions(pg.admin_dsn) - before
    assert opened == (n if per_request else 1), opened
    stats = t.stats()
    assert stats["family"] == "sqlalchemy" and stats["connections_opened"] == opened
    assert sum(stats["acquire_ms"].values()) == sum(stats["query_ms"].values()) == n
    assert stats["pool"]["pool_class"] == ("NullPool" if per_request else "AsyncAdaptedQueuePool")
    assert stats["pool"]["pool_size"] == target_connections(pg.admin_dsn, tid) == (0 if per_request else 1)


def test_the_queue_pool_holds_at_most_pool_max_under_32_concurrent_requests(pg, serve) -> None:
    t = serve("sqlalchemy-queue")
    responses, peak = peak_connections(pg.admin_dsn, t.target_id, lambda: [r for _ in range(3) for r in t.burst(32)])
    assert [r.status_code for r in responses] == [200] * 96
    assert 1 <= peak <= POOL_MAX
    stats = t.stats()
    assert 1 <= stats["connections_opened"] <= POOL_MAX and stats["pool"]["pool_max"] == POOL_MAX
    assert stats["pool"]["checked_out"] == 0 and stats["pool"]["pings"] == 0


def test_pre_ping_runs_one_more_statement_per_checkout_of_a_pooled_connection(pg, serve) -> None:
    """pool_pre_ping: before handing out a connection that was already in the pool, the engine runs a ping
    (asyncpg's `;`, inside BEGIN/ROLLBACK); a connection it has just opened is not pinged. PostgreSQL counts
    the ping's transaction: two rolled-back transactions per request instead of one (the engine rolls back
    the read's transaction when the connection goes back). PostgreSQL's figure is read after the target
    exits, when its backend has reported its statistics; what the engine's first connect runs is the same
    for both targets."""
    rollbacks = {}
    n = 12
    for strategy in ("queue", "pre-ping"):
        before = query(pg.admin_dsn, ROLLBACKS)[0][0]
        t = serve(f"sqlalchemy-{strategy}")
        assert [t.get("/db").status_code for _ in range(n)] == [200] * n
        stats = t.stats()
        assert stats["connections_opened"] == 1
        assert stats["pool"]["pings"] == (n - 1 if strategy == "pre-ping" else 0)  # every checkout but the first
        assert t.terminate() == 0
        rollbacks[strategy] = query(pg.admin_dsn, ROLLBACKS)[0][0] - before
    # the n - 1 pings /stats counted, and the exit hook's checkout on SIGTERM: pinged too
    assert rollbacks["pre-ping"] - rollbacks["queue"] == n, rollbacks


@pytest.mark.parametrize("strategy", ["null-pgbouncer", "queue-pgbouncer"])
def test_through_pgbouncer_postgresql_sees_its_pooled_sessions(strategy: str, pg, bouncer, serve) -> None:
    """Through PgBouncer in transaction mode, the prepared statements with unique names (no cache) never
    collide on a shared server connection; PostgreSQL sees PgBouncer's sessions, not one per request."""
    t = serve(f"sqlalchemy-{strategy}")
    before = sessions(pg.admin_dsn)
    responses = [t.get("/db") for _ in range(20)] + t.burst(16) + t.burst(16)
    assert Counter(r.status_code for r in responses) == Counter({200: 52}), [r.text for r in responses[-3:]]
    assert sessions(pg.admin_dsn) - before <= bouncer.pool_size
    assert t.stats()["connections_opened"] == (52 if strategy == "null-pgbouncer" else t.stats()["pool"]["pool_size"])


def test_errors_name_the_asyncpg_class_and_sqlstate(pg, serve) -> None:
    """A 503 names asyncpg's exception behind SQLAlchemy's wrapper, PoolTimeout when no pooled connection
    came free in pool_timeout, TimeoutError past request_timeout."""
    t = serve("sqlalchemy-null")
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute("ALTER ROLE connbench CONNECTION LIMIT 0")  # every new connection refused: 53300
        try:
            r = t.get("/db")
        finally:
            admin.execute("ALTER ROLE connbench CONNECTION LIMIT -1")
    assert r.status_code == 503 and (r.json()["error"], r.json()["sqlstate"]) == ("TooManyConnectionsError", "53300")
    env = {"CONNBENCH_POOL_MAX": "1", "CONNBENCH_POOL_TIMEOUT": "0.2", "CONNBENCH_REQUEST_TIMEOUT": "1"}
    t = serve("sqlalchemy-queue", env=env)
    slow = t.burst(2, "/db?work_ms=600&hold=1")
    assert sorted((r.status_code, r.json().get("error")) for r in slow) == [(200, None), (503, "PoolTimeout")]
    r = t.get("/db?work_ms=1500")
    assert r.status_code == 503 and r.json()["error"] == "TimeoutError"
    assert t.stats()["errors"] == {"PoolTimeout": 1, "TimeoutError": 1}
    assert t.get("/db?hold=2").status_code == 400


@pytest.mark.parametrize("strategy", ["queue", "null"])
def test_sigterm_drains_then_logs_the_exit_hook_row_through_the_engine(strategy: str, pg, serve) -> None:
    tid = f"sqlalchemy-{strategy}"
    t = serve(tid)
    pid = t.proc.pid
    answered: list[int] = []
    load = threading.Thread(target=lambda: answered.extend(r.status_code for r in t.burst(4, "/db?work_ms=800&hold=1")))
    load.start()
    wait_until(lambda: t.stats()["requests"] == 4, 15, what="four requests holding their connections")
    assert t.terminate() == 0, t.log()
    load.join()
    assert answered == [200] * 4 and "exit hook failed" not in t.log()
    assert shutdown_rows(pg.superuser_dsn("connbench"), tid, pid) == 1
    assert target_connections(pg.admin_dsn, tid) == 0
