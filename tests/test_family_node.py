"""The node family against a real PostgreSQL: node-postgres's Pool and Client, and postgres.js, each as its
users run it. What PostgreSQL sees per request, what the pools hold under 32 concurrent requests, and the
exit hook on SIGTERM."""

from __future__ import annotations

import pytest
from helpers import peak_connections, sessions, shutdown_rows, start_target, target_connections

POOL_MAX = 10


@pytest.mark.parametrize(
    ("target_id", "per_request"), [("node-pg-client", 1), ("node-pg-pool", 0), ("node-postgres-js", 0)]
)
def test_sessions_per_request(target_id: str, per_request: int, pg) -> None:
    """A pg.Client per request opens one session per request; the module-level pools open one at the first
    request and reuse it."""
    with start_target(target_id, pg.dsn) as t:
        before = sessions(pg.admin_dsn)
        n = 20
        assert [t.get("/db").status_code for _ in range(n)] == [200] * n
        opened = sessions(pg.admin_dsn) - before
        assert opened == (n if per_request else 1), opened
        stats = t.stats()
        assert stats["connections_opened"] == opened and stats["family"] == "node"
        assert sum(stats["query_ms"].values()) == n
        # the client per request ended each connection; the pools keep theirs
        assert target_connections(pg.admin_dsn, target_id) == (0 if per_request else 1)


@pytest.mark.parametrize("target_id", ["node-pg-pool", "node-postgres-js"])
def test_the_pools_hold_at_most_pool_max_under_32_concurrent_requests(target_id: str, pg) -> None:
    with start_target(target_id, pg.dsn) as t:
        responses, peak = peak_connections(pg.admin_dsn, target_id, lambda: [r for _ in range(3) for r in t.burst(32)])
        assert [r.status_code for r in responses] == [200] * 96
        assert 1 <= peak <= POOL_MAX
        assert 1 <= t.stats()["connections_opened"] <= POOL_MAX


def test_hold_keeps_the_connection_through_the_slow_work(pg) -> None:
    """hold=1 checks a connection out for the slow work (pg.Pool.connect, postgres.js sql.reserve()): 8
    concurrent requests then need 8 connections, where hold=0 lets the pool reuse fewer."""
    for target_id in ("node-pg-pool", "node-postgres-js"):
        with start_target(target_id, pg.dsn) as t:
            responses, peak = peak_connections(pg.admin_dsn, target_id, lambda: t.burst(8, "/db?work_ms=300&hold=1"))
            assert [r.status_code for r in responses] == [200] * 8
            assert peak == 8, (target_id, peak)


@pytest.mark.parametrize("target_id", ["node-pg-pool", "node-pg-client", "node-postgres-js"])
def test_sigterm_runs_the_exit_hook_and_releases_every_connection(target_id: str, pg) -> None:
    with start_target(target_id, pg.dsn) as t:
        assert all(r.status_code == 200 for r in t.burst(8))
        pid = t.proc.pid
        assert t.terminate() == 0, t.log()
        assert "exit hook logged" in t.log()
        assert shutdown_rows(pg.superuser_dsn("connbench"), target_id, pid) == 1
        assert target_connections(pg.admin_dsn, target_id) == 0
