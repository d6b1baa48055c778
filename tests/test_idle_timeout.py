"""CONNBENCH_IDLE_TIMEOUT against a real PostgreSQL, seen as the backend pids of each target's connections.

With it, each library's own setting closes or replaces connections that sat idle: asyncpg's
max_inactive_connection_lifetime (only those above the pool's min_size), SQLAlchemy's pool_recycle (an age
limit, applied when a connection is checked out) and pg-pool's idleTimeoutMillis. Without it, the library
defaults (300 s, never, 10 s) keep every connection over a short pause. pool_min is 1, so that pool-eager's
asyncpg pool has connections above its floor once four concurrent requests have grown it.
"""

from __future__ import annotations

import time

import pytest
from helpers import app_name, query

TARGETS = ["pool-eager-asyncpg", "sqlalchemy-queue", "node-pg-pool"]
PAUSE = 3  # seconds: well past CONNBENCH_IDLE_TIMEOUT=1, well short of every library's default
HOLD = "/db?work_ms=300&hold=1"  # four of these at once hold four connections


def backends(admin_dsn: str, target_id: str) -> set[int]:
    """The pids of the target's client backends."""
    sql = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = %s"
    return {pid for (pid,) in query(admin_dsn, sql, [app_name(target_id)])}


@pytest.mark.parametrize("idle_timeout", ["1", ""], ids=["idle_timeout=1", "default"])
def test_idle_connections_go_only_with_an_idle_timeout(idle_timeout: str, pg, serve) -> None:
    """Each target serves four concurrent requests, pauses, serves one more: with an idle timeout some backend
    that served the first requests is gone (asyncpg keeps exactly its floor of one); without it, the same
    backends are there before and after."""
    env = {"CONNBENCH_IDLE_TIMEOUT": idle_timeout, "CONNBENCH_POOL_MIN": "1"}
    started = [serve(t, env=env) for t in TARGETS]
    before = {}
    for t in started:
        assert [r.status_code for r in t.burst(4, HOLD)] == [200] * 4
        assert t.stats()["settings"]["idle_timeout"] == float(idle_timeout or 0)
        before[t.target_id] = backends(pg.admin_dsn, t.target_id)
        assert len(before[t.target_id]) == 4, (t.target_id, before)
    time.sleep(PAUSE)
    after = {}
    for t in started:
        assert t.get("/db").status_code == 200
        after[t.target_id] = backends(pg.admin_dsn, t.target_id)
    for target_id in TARGETS:
        if idle_timeout:
            assert before[target_id] - after[target_id], (target_id, before, after)
        else:
            assert after[target_id] == before[target_id], (target_id, before, after)
    if idle_timeout:
        floor = after["pool-eager-asyncpg"]
        assert len(floor) == 1 and floor <= before["pool-eager-asyncpg"], (before, after)
