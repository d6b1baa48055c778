"""The targets against a real PostgreSQL: real `connbench serve` processes, real HTTP, PostgreSQL's own view.

Each test checks what a strategy really does to PostgreSQL (pg_stat_activity, pg_stat_database), not what
it is meant to do; where a driver behaves differently from the design's expectation, the test pins the
observed behaviour and its docstring explains it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from helpers import (
    CONNBENCH,
    REPO,
    count_by_database,
    free_port,
    pgbouncer_server_connections,
    query,
    run_connbench,
    service_dirs,
    sessions,
    shutdown_rows,
    start_target,
    target_connections,
    wait_until,
)

from benchmarks.errors import ConnbenchError
from benchmarks.stack.postgres import EmbeddedPostgres
from benchmarks.stack.serve import probe
from targets.contract import SETTINGS, Settings
from targets.python.strategies import build_strategy
from targets.registry import TARGETS

POOL_MIN = int(SETTINGS["pool_min"].default)
SMALL_MAX_CONNECTIONS = 20


def by_strategy(*strategies: str) -> list[str]:
    return [t.id for t in TARGETS.values() if t.strategy in strategies]


def assert_world_row(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "randomNumber"}, body
    assert isinstance(body["id"], int) and 1 <= body["id"] <= 10_000, body
    assert isinstance(body["randomNumber"], int), body


def error_classes(responses: list[httpx.Response]) -> Counter:
    return Counter(r.json()["error"] if r.status_code == 503 else r.status_code for r in responses)


@pytest.fixture(scope="module")
def small_pg() -> Iterator[EmbeddedPostgres]:
    """A separate server with a low connection cap, for the leaky targets."""
    with EmbeddedPostgres(max_connections=SMALL_MAX_CONNECTIONS) as server:
        data_dir = server.dir
        yield server
    assert data_dir is not None and not os.path.exists(data_dir), f"{data_dir} left behind"


def non_superuser_slots(pg: EmbeddedPostgres) -> int:
    reserved = int(query(pg.admin_dsn, "SHOW superuser_reserved_connections")[0][0])
    return SMALL_MAX_CONNECTIONS - reserved


def wait_no_target_connections(pg: EmbeddedPostgres) -> None:
    """Wait until the previous test's target connections are gone from the `connbench` database."""
    wait_until(lambda: count_by_database(pg.admin_dsn) == 0, 30, what="an empty connbench database")


# -- the HTTP contract, every target (and where its requests' time goes: acquire and query) ------------
@pytest.mark.parametrize("target_id", list(TARGETS))
def test_every_target_serves_the_contract(target_id: str, dsn_for) -> None:
    target = TARGETS[target_id]
    with start_target(target_id, dsn_for(target_id)) as t:
        assert t.get("/health").json() == {"status": "ok"}
        assert t.get("/ready").json() == {"ready": True}
        assert_world_row(t.get("/db"))

        stats = t.stats()
        for key in ("target", "strategy", "driver", "pid", "started_at", "ready_at", "requests", "errors",
                    "connections_opened", "pool"):  # fmt: skip
            assert key in stats, key
        assert (stats["target"], stats["strategy"], stats["driver"]) == (
            target.id,
            target.strategy,
            target.driver,
        )
        # one worker: uvicorn (and Node) serve in the `connbench serve` process; gunicorn's one worker is a
        # child of its master, which `connbench serve` became
        assert t.proc.pid in (stats["pid"], psutil.Process(stats["pid"]).ppid())
        assert stats["started_at"] <= stats["ready_at"] <= time.time()
        assert stats["requests"] == 1
        assert stats["errors"] == {}
        assert stats["connections_opened"] >= 1
        assert isinstance(stats["pool"], dict)
        if target.strategy in ("pool-eager", "pool-lazy"):
            assert {"pool_size", "pool_idle", "pool_max"} <= set(stats["pool"])
            assert stats["pool"]["pool_max"] == int(SETTINGS["pool_max"].default)

        # where a request's time goes: the slow work held with the connection or not, acquire and query times
        for hold in ("1", "0"):
            for _ in range(3):  # edge-global-asyncpg fails every other request (a client from a gone loop)
                asked = time.monotonic()
                r = t.get(f"/db?work_ms=150&hold={hold}")
                if r.status_code == 200:
                    break
            assert r.status_code == 200, r.text
            assert time.monotonic() - asked >= 0.15, f"hold={hold}: the slow work was not done"
        assert t.get("/db?work_ms=soon").status_code == 400
        stats = t.stats()
        for key in ("acquire_ms", "query_ms"):
            hist = stats[key]
            assert isinstance(hist, dict) and hist, (key, stats)
            assert all(float(b) >= 0 and isinstance(n, int) and n > 0 for b, n in hist.items()), hist
            assert 2 <= sum(hist.values()) <= stats["requests"], (key, hist, stats["requests"])


# -- global: one shared connection ---------------------------------------------------------------------
def test_global_asyncpg_fails_under_concurrency(pg: EmbeddedPostgres) -> None:
    """asyncpg refuses a second query on a connection that is busy: InterfaceError, 503."""
    with start_target("global-asyncpg", pg.dsn) as t:
        responses: list[httpx.Response] = []
        for _ in range(3):  # almost always the first burst shows it; a noisy machine gets retries
            responses += t.burst(50)
            if any(r.status_code == 503 for r in responses):
                break
        failed = [r for r in responses if r.status_code == 503]
        assert failed, "no 503 in 3 bursts of 50 concurrent requests"
        assert {r.json()["error"] for r in failed} == {"InterfaceError"}
        assert any("another operation is in progress" in r.json()["detail"] for r in failed)
        assert all(r.status_code in (200, 503) for r in responses)
        assert any(r.status_code == 200 for r in responses)
        assert t.get("/health").status_code == 200
        assert t.stats()["connections_opened"] == 1


def test_global_psycopg_serialises_concurrent_requests(pg: EmbeddedPostgres) -> None:
    """psycopg does NOT fail where asyncpg does: AsyncConnection holds an internal asyncio.Lock around
    every operation, so 50 concurrent requests on the one shared connection queue up behind each other.
    All answer 200 and the process opened exactly one connection; the cost is latency, not errors."""
    with start_target("global-psycopg", pg.dsn) as t:
        responses = t.burst(50)
        assert [r.status_code for r in responses] == [200] * 50, error_classes(responses)
        for r in responses:
            assert_world_row(r)
        assert t.stats()["connections_opened"] == 1
        assert target_connections(pg.admin_dsn, "global-psycopg") == 1


# -- per-request: one session per request --------------------------------------------------------------
@pytest.mark.parametrize("target_id", by_strategy("per-request"))
def test_per_request_opens_one_session_per_request(target_id: str, pg: EmbeddedPostgres) -> None:
    n = 15
    with start_target(target_id, pg.dsn) as t:
        before = sessions(pg.admin_dsn)
        for _ in range(n):
            assert_world_row(t.get("/db"))
        wait_until(lambda: sessions(pg.admin_dsn) >= before + n, 15, what=f"{n} new sessions")
        assert t.stats()["connections_opened"] == n
        wait_until(lambda: target_connections(pg.admin_dsn, target_id) == 0, 15, what="closed sessions")


# -- pools: eager vs lazy ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target_id", "pool_min"),
    [(tid, POOL_MIN) for tid in by_strategy("pool-eager")] + [("pool-eager-asyncpg", 4)],
)
def test_pool_eager_is_full_when_ready(target_id: str, pool_min: int, pg: EmbeddedPostgres) -> None:
    env = {"CONNBENCH_POOL_MIN": str(pool_min)}
    with start_target(target_id, pg.dsn, env=env) as t:
        # No waiting: the pool must be full by the time /ready first answers 200.
        assert target_connections(pg.admin_dsn, target_id) == pool_min
        assert t.stats()["pool"]["pool_size"] == pool_min
        assert t.stats()["connections_opened"] == pool_min
        assert_world_row(t.get("/db"))
        assert t.stats()["connections_opened"] == pool_min  # served from the pool


@pytest.mark.parametrize("target_id", by_strategy("pool-lazy"))
def test_pool_lazy_is_empty_until_the_first_request(target_id: str, pg: EmbeddedPostgres) -> None:
    with start_target(target_id, pg.dsn) as t:
        assert target_connections(pg.admin_dsn, target_id) == 0
        time.sleep(0.5)  # and it stays empty while idle: nothing fills it in the background
        assert target_connections(pg.admin_dsn, target_id) == 0
        assert t.stats()["connections_opened"] == 0
        assert_world_row(t.get("/db"))
        wait_until(lambda: target_connections(pg.admin_dsn, target_id) >= 1, 15, what="a pooled connection")
        assert t.stats()["connections_opened"] >= 1


# -- leaky: a pool per request, never closed -----------------------------------------------------------
def test_leaky_asyncpg_climbs_to_the_cap_then_53300(small_pg: EmbeddedPostgres) -> None:
    """Each request leaves one open connection behind: a dropped asyncpg pool stays reachable from the
    running event loop through its open connection, so not even a full garbage collection frees it. The
    count climbs by one per request to the non-superuser cap (max_connections -
    superuser_reserved_connections), then requests fail with 53300 while the process stays up."""
    wait_no_target_connections(small_pg)
    cap = non_superuser_slots(small_pg)
    tid = "leaky-asyncpg"
    with start_target(tid, small_pg.dsn) as t:
        counts = []
        for _ in range(cap):
            assert_world_row(t.get("/db"))
            counts.append(target_connections(small_pg.admin_dsn, tid))
        assert counts == list(range(1, cap + 1))
        for _ in range(3):
            r = t.get("/db")
            assert r.status_code == 503, r.text
            assert r.json()["sqlstate"] == "53300", r.json()
            assert r.json()["error"] == "TooManyConnectionsError"
        assert target_connections(small_pg.admin_dsn, tid) == cap
        assert t.get("/health").status_code == 200
        assert t.proc.poll() is None
        assert t.stats()["errors"] == {"TooManyConnectionsError": 3}


def test_leaky_psycopg_does_not_climb_when_requests_succeed(small_pg: EmbeddedPostgres) -> None:
    """Finding: leaky-psycopg does NOT climb to max_connections under ordinary load.

    psycopg_pool is written without reference cycles (its worker tasks hold only the task queue, scheduled
    tasks hold a weak reference to the pool, a connection's back-reference to its pool is cleared), so
    when the request drops its AsyncConnectionPool, reference counting frees it at once and freeing the
    connection closes its socket. Each request therefore costs exactly one new session, as per-request does,
    and nothing accumulates: more sequential requests than there are connection slots all succeed. (The
    orphaned worker tasks are collected later by the cyclic GC: "Task was destroyed but it is pending!".)
    """
    wait_no_target_connections(small_pg)
    cap = non_superuser_slots(small_pg)
    tid = "leaky-psycopg"
    with start_target(tid, small_pg.dsn) as t:
        before = sessions(small_pg.admin_dsn)
        n = cap + 8
        for _ in range(n):
            assert_world_row(t.get("/db"))
        assert error_classes(t.burst(cap // 2)) == Counter({200: cap // 2})
        requests = n + cap // 2
        wait_until(lambda: sessions(small_pg.admin_dsn) >= before + requests, 15, what="one session each")
        assert t.stats()["connections_opened"] == requests
        wait_until(lambda: target_connections(small_pg.admin_dsn, tid) == 0, 15, what="no leftover")
        assert t.get("/health").status_code == 200


def test_leaky_psycopg_pool_that_met_a_connect_error_lingers_until_gc(small_pg: EmbeddedPostgres) -> None:
    """Finding, the other half: a leaked psycopg pool that met a connection error is NOT freed when the
    request drops it. psycopg's connect keeps the last error in a local of the frame that raises it, so the
    error, its traceback and every frame on it (among them the pool's own `_add_connection`) form a
    reference cycle: the pool lives until the cyclic GC's next full collection, and with it the connection
    its retry opened. Under a concurrent burst above the cap this makes the count climb to the cap: in the
    target process, one burst of 40 requests on a 17-slot server left 17 connections for about 30 s, during
    which every request failed with PoolTimeout (not 53300: the 53300 stays inside the pool's retries),
    then a collection freed them all.

    Shown here in-process and deterministically, the GC paused, run the way app.py runs a request:
    an error-free leaky request leaves nothing behind; one whose first connect attempt hits the full server
    succeeds on the pool's retry, and its connection stays after the request until gc.collect().
    """
    wait_no_target_connections(small_pg)
    cap = non_superuser_slots(small_pg)
    tid = "leaky-psycopg"
    settings = Settings(pool_timeout=15.0, connect_timeout=2.0)
    strategy = build_strategy(tid, small_pg.dsn, settings)
    connect_failed = threading.Event()

    class Flag(logging.Handler):  # keeps no record: a stored record would hold the error (and the pool)
        def emit(self, record: logging.LogRecord) -> None:
            if "error connecting" in record.getMessage():
                connect_failed.set()

    async def request() -> tuple[int, int]:
        async def work(conn):
            return await conn.fetch_world(1)

        return await asyncio.wait_for(strategy.run(work), settings.request_timeout)

    def count() -> int:
        return target_connections(small_pg.admin_dsn, tid)

    async def scenario() -> None:
        assert (await request())[0] == 1
        assert await asyncio.to_thread(count) == 0  # freed by reference counting, no GC involved

        fillers = [
            await psycopg.AsyncConnection.connect(small_pg.dsn, application_name="connbench:tests-filler")
            for _ in range(cap)
        ]
        pending = asyncio.create_task(request())
        try:
            assert await asyncio.to_thread(connect_failed.wait, 15), "the first connect did not fail"
        finally:
            for conn in fillers:
                await conn.close()
        assert (await pending)[0] == 1  # the pool's retry got a slot
        del pending
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(count) == 1  # the request is over; its pool and connection are not
        gc.collect()
        await wait_async(lambda: count() == 0, 15, "the GC to close the leaked connection")

    pool_log = logging.getLogger("psycopg.pool")
    flag = Flag()
    pool_log.addHandler(flag)
    pool_log.propagate = False  # pytest's log capture would otherwise keep the records
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        asyncio.run(scenario())
    finally:
        pool_log.removeHandler(flag)
        pool_log.propagate = True
        if was_enabled:
            gc.enable()
        gc.collect()


async def wait_async(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


# -- edge runtimes -------------------------------------------------------------------------------------
def test_edge_global_asyncpg_alternates(pg: EmbeddedPostgres) -> None:
    """The client is bound to the event loop of the request that opened it: the next request (a new
    loop) fails, the failure resets the isolate, the one after reconnects and succeeds."""
    with start_target("edge-global-asyncpg", pg.dsn) as t:
        statuses = [t.get("/db").status_code for _ in range(8)]
        assert statuses == [200, 503] * 4
        assert t.stats()["connections_opened"] == 4


@pytest.mark.parametrize("target_id", by_strategy("edge-per-request"))
def test_edge_per_request_has_no_errors(target_id: str, pg: EmbeddedPostgres) -> None:
    with start_target(target_id, pg.dsn) as t:
        for _ in range(20):
            assert_world_row(t.get("/db"))
        responses = t.burst(20)
        assert error_classes(responses) == Counter({200: 20})
        assert t.stats()["connections_opened"] == 40


def test_edge_global_psycopg_survives_sequential_isolates(pg: EmbeddedPostgres) -> None:
    """psycopg's AsyncConnection is not tied to the loop that opened it: it waits on its socket through
    whatever loop is running, so one at a time, the global client works across per-request event loops
    and is opened once. (Used concurrently from several loops it breaks instead: its internal asyncio.Lock
    binds to one loop, so requests fail with RuntimeError or hang until the request timeout.)"""
    with start_target("edge-global-psycopg", pg.dsn) as t:
        for _ in range(10):
            assert_world_row(t.get("/db"))
        assert t.stats()["connections_opened"] == 1
        assert target_connections(pg.admin_dsn, "edge-global-psycopg") == 1


# -- pgbouncer: per-request code, pooled server connections --------------------------------------------
@pytest.mark.parametrize("target_id", by_strategy("pgbouncer"))
def test_pgbouncer_caps_server_connections(target_id: str, pg: EmbeddedPostgres, bouncer) -> None:
    with start_target(target_id, bouncer.dsn) as t:
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, pgbouncer_server_connections(bouncer, pg.admin_dsn))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            responses = t.burst(40) + t.burst(40)
        finally:
            stop.set()
            sampler.join()
        assert error_classes(responses) == Counter({200: 80})
        assert 1 <= peak <= bouncer.pool_size
        stats = t.stats()
        assert stats["connections_opened"] == stats["requests"] == 80


# -- SIGTERM: exit hook, connections released, exit 0 --------------------------------------------------
@pytest.mark.parametrize("target_id", ["pool-eager-asyncpg", "per-request-psycopg"])
def test_sigterm_during_load(target_id: str, pg: EmbeddedPostgres) -> None:
    with start_target(target_id, pg.dsn) as t:
        stop = threading.Event()
        ok = Counter()

        def load() -> None:
            with httpx.Client(timeout=15) as client:
                while not stop.is_set():
                    try:
                        if client.get(t.url + "/db").status_code == 200:
                            ok["n"] += 1
                    except httpx.HTTPError:
                        if t.proc.poll() is not None:
                            return
                        time.sleep(0.01)

        threads = [threading.Thread(target=load) for _ in range(8)]
        for th in threads:
            th.start()
        try:
            wait_until(lambda: ok["n"] >= 20, 30, what="load to be running")
            pid = t.proc.pid
            t.proc.send_signal(signal.SIGTERM)
            status = t.proc.wait(30)
        finally:
            stop.set()
            for th in threads:
                th.join()
        assert status == 0, t.log()
        assert "exit hook failed" not in t.log()
        assert shutdown_rows(pg.superuser_dsn("connbench"), target_id, pid) == 1
        wait_until(lambda: target_connections(pg.admin_dsn, target_id) == 0, 30, what="connections released")


# -- bad input: one line on stderr, non-zero exit ------------------------------------------------------
def assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("connbench: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


def test_serve_unknown_target(pg: EmbeddedPostgres) -> None:
    out = run_connbench("serve", "no-such-target", "--port", str(free_port()), "--dsn", pg.dsn)
    assert_one_line_error(out, "no-such-target", "pool-eager-asyncpg")


def test_serve_unreachable_dsn() -> None:
    closed = free_port()  # nothing listens there
    out = run_connbench("serve", "per-request-asyncpg", "--port", str(free_port()),
                        "--dsn", f"postgresql://connbench@127.0.0.1:{closed}/connbench")  # fmt: skip
    assert_one_line_error(out, "cannot reach PostgreSQL")


def test_serve_waits_for_a_postgres_slow_to_answer_then_fails_in_one_line(capsys) -> None:
    """A server that accepts and never answers (as one swamped by a whole stack starting) is tried again,
    with a line saying so, until the probe's patience runs out; then one line names the timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        dsn = f"postgresql://connbench:secret@127.0.0.1:{silent.getsockname()[1]}/connbench"
        with pytest.raises(ConnbenchError, match="cannot reach PostgreSQL .*connection timeout expired") as err:
            probe(dsn, patience_s=2.5, connect_timeout_s=2)
    waits = capsys.readouterr().err.strip().splitlines()
    assert len(waits) == 1 and waits[0].startswith("connbench: waiting for PostgreSQL at"), waits
    assert "secret" not in waits[0] and "secret" not in str(err.value)


def test_serve_port_in_use(pg: EmbeddedPostgres) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_connbench("serve", "per-request-asyncpg", "--port", str(port), "--dsn", pg.dsn)
    assert_one_line_error(out, str(port), "in use")


def test_db_without_postgres_binaries() -> None:
    out = run_connbench("db", env={"CONNBENCH_PG_BINDIR": "/nonexistent"})
    assert_one_line_error(out, "PostgreSQL")


# -- connbench db --------------------------------------------------------------------------------------
def test_connbench_db_runs_and_cleans_up_on_ctrl_c() -> None:
    from benchmarks.stack.pgbouncer import missing_reason

    with_bouncer = missing_reason() is None
    proc = subprocess.Popen(
        [*CONNBENCH, "db"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        # A shell may start background jobs with SIGINT ignored; Ctrl-C must reach this one.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines: dict[str, str] = {}
        wanted = {"postgres", "pgbouncer"} if with_bouncer else {"postgres"}
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while not wanted <= set(lines):
            assert time.monotonic() < deadline and proc.poll() is None, (lines, proc.poll())
            line = proc.stdout.readline()
            name, sep, value = line.strip().partition(": ")
            if sep and name in ("postgres", "pgbouncer"):
                lines[name] = value

        for name, dsn in lines.items():
            assert dsn.startswith("postgresql://connbench:"), dsn
            with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
                assert conn.execute("SELECT count(*) FROM world").fetchone() == (10_000,), name

        children = psutil.Process(proc.pid).children(recursive=True)
        assert children
        dirs = service_dirs(proc.pid)
        assert any(Path(d).name.startswith("connbench-pg-") for d in dirs), dirs
        if with_bouncer:
            assert any(Path(d).name.startswith("connbench-pgb-") for d in dirs), dirs
        assert all(Path(d).is_dir() for d in dirs)

        proc.send_signal(signal.SIGINT)
        status = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status in (0, 130), status
    assert "Traceback" not in proc.stderr.read()
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, alive
    for d in dirs:
        assert not os.path.exists(d), f"{d} left behind"
