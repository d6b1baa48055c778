"""Fault and lifecycle scenarios end to end: `connbench run --profile smoke` on a few targets per scenario.

Each fixture runs one scenario as the user would (a subprocess, real PostgreSQL, real targets, real Locust)
and the tests read its summary.csv. The machine is small and shared: the assertions are about behaviour
(recovers or not, hits the cap or not, logged or not), never about timings beyond wide bounds.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_connbench, timeseries_events

from benchmarks.results.findings import pooler
from benchmarks.results.load import load_run
from benchmarks.results.summary import SUMMARY_COLUMNS
from benchmarks.run import faults as F


def run_scenario(tmp_path_factory: pytest.TempPathFactory, scenario: str, targets: list[str]) -> Path:
    out = tmp_path_factory.mktemp(scenario) / "run"
    proc: subprocess.CompletedProcess = run_connbench(
        "run", "--profile", "smoke", "--scenarios", scenario, "--targets", ",".join(targets),
        "--out", str(out), "--no-report", "--no-baseline", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert sorted(summary["target"]) == sorted(targets)
    return out


def summary(out: Path, scenario: str | None = None) -> pd.DataFrame:
    s = pd.read_csv(out / "summary.csv")
    return (s[s["scenario"] == scenario] if scenario else s).set_index("target")


def events(out: Path, target: str, scenario: str | None = None) -> list[str]:
    return timeseries_events(out, target=target, **({"scenario": scenario} if scenario else {}))


# -- db-restart ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def db_restart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The global client and a client per request; the pool is the session smoke profile run's cell."""
    return run_scenario(tmp_path_factory, "db-restart", ["global-asyncpg", "per-request-asyncpg"])


def test_db_restart_global_stays_dead_pools_and_per_request_recover(db_restart: Path, smoke_run: Path) -> None:
    runs = {"global-asyncpg": db_restart, "per-request-asyncpg": db_restart, "pool-eager-asyncpg": smoke_run}
    for t, run in runs.items():
        assert {"db-stop:fast", "db-up"} <= set(events(run, t, "db-restart")), t
    s = pd.concat([summary(run, "db-restart").loc[[t]] for t, run in runs.items()])
    # the one shared connection died with its server session and is never replaced
    assert not s.loc["global-asyncpg", "recovered"]
    assert math.isnan(s.loc["global-asyncpg", "recovery_s"])
    assert s.loc["global-asyncpg", "errors_after_action"] > 0
    for t in ("per-request-asyncpg", "pool-eager-asyncpg"):
        assert s.loc[t, "recovered"], s.loc[t, ["errors", "recovery_s"]]
        assert 0 <= s.loc[t, "recovery_s"] < 4.0, t  # wide: the database is back, the next requests succeed
        assert s.loc[t, "outage_s"] < 4.0, t


# -- killed-backends -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def killed_backends(tmp_path_factory: pytest.TempPathFactory) -> Path:
    targets = ["pool-eager-psycopg", "sqlalchemy-pre-ping", "django-persistent", "global-asyncpg"]
    return run_scenario(tmp_path_factory, "killed-backends", targets)


def test_killed_backends_fail_unchecked_connections_and_every_pool_recovers(killed_backends: Path) -> None:
    s = summary(killed_backends)
    users = 4  # the smoke profile's level: at most this many requests are in flight at the terminate
    for t in s.index:
        ended = [int(e.split(":")[1]) for e in events(killed_backends, t) if e.startswith("terminate:")]
        assert ended and ended[0] >= 1, (t, events(killed_backends, t))  # its sessions were there, and ended
        if t != "global-asyncpg":
            assert s.loc[t, "recovered"], s.loc[t, ["errors", "recovery_s"]]
    # the global client's one connection is gone and nothing opens another
    assert not s.loc["global-asyncpg", "recovered"] and s.loc["global-asyncpg", "errors_after_action"] > 0
    # psycopg_pool hands out its idle connections unchecked (no `check`): requests on the dead ones fail
    psycopg_pool = s.loc["pool-eager-psycopg"]
    assert psycopg_pool["errors_after_action"] >= 1 and "AdminShutdown" in json.loads(psycopg_pool["errors"])
    # a check before use (pool_pre_ping, CONN_HEALTH_CHECKS) replaces a dead connection: only the requests in
    # flight at the terminate can fail
    for t in ("sqlalchemy-pre-ping", "django-persistent"):
        assert s.loc[t, "errors_after_action"] <= users, s.loc[t, ["errors", "errors_after_action"]]


def test_killed_backends_a_psycopg_pool_with_a_check_fails_only_in_flight(tmp_path_factory) -> None:
    """CONNBENCH_POOL_CHECK=1: psycopg_pool's `check` before each checkout replaces the terminated
    connections, as pool_pre_ping does: only the requests in flight at the terminate can fail."""
    out = tmp_path_factory.mktemp("killed-checked") / "run"
    proc = run_connbench(
        "run", "--profile", "smoke", "--scenarios", "killed-backends", "--targets", "pool-eager-psycopg",
        "--out", str(out), "--no-report", "--no-baseline", env={"CONNBENCH_POOL_CHECK": "1"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = summary(out).loc["pool-eager-psycopg"]
    assert json.loads((out / "manifest.json").read_text())["target_settings"]["pool_check"] == 1
    assert row["recovered"] and row["errors_after_action"] <= 4, row[["errors", "errors_after_action"]]


# -- conn-cap ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conn_cap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_scenario(tmp_path_factory, "conn-cap", ["leaky-asyncpg", "leaky-psycopg", "pool-eager-asyncpg"])


def test_conn_cap_an_eager_pool_that_does_not_fit_takes_its_replica_down(conn_cap: Path) -> None:
    """An outcome, not a broken measurement: three uvicorn workers' eager pools of 10 want 30 of the 17 slots,
    a worker meets 53300 opening its pool at start-up, and uvicorn stops the whole target. When that stop comes
    before any worker has answered /ready (a race between the workers' start-ups, lost on a busy machine), the cell
    ends as a target that failed to start, set aside as invalid with its log's last lines."""
    row = summary(conn_cap).loc["pool-eager-asyncpg"]
    (log,) = conn_cap.glob("raw/conn-cap.pool-eager-asyncpg.*/target.log")
    assert "TooManyConnectionsError" in log.read_text()  # a worker met the cap opening its pool at start-up
    if not row["valid"]:
        assert row["invalid_reason"].startswith("target failed to start"), row["invalid_reason"]
        return
    # uvicorn then stops the target, mostly within the load window: its cell is marked and still valid (when
    # the stop comes after the window, the surviving worker served the whole load without a failure)
    gone = "ConnectionRefusedError" in json.loads(row["errors"])
    marked = events(conn_cap, "pool-eager-asyncpg")
    assert gone == ("target-exited" in marked), (row["errors"], marked)
    said = " ".join(pooler.conn_cap_sentences(load_run(conn_cap)))
    assert gone == ("pool-eager-asyncpg exited during the load" in said), said
    if not gone:
        assert row["failures"] == 0


def test_conn_cap_leaky_asyncpg_hits_53300(conn_cap: Path) -> None:
    s = summary(conn_cap)
    row = s.loc["leaky-asyncpg"]
    assert row["errors_53300"] > 0
    assert "TooManyConnectionsError" in json.loads(row["errors"])
    assert row["conn_peak"] >= 12  # 17 slots for the targets' role (max_connections 20, 3 reserved)


def test_conn_cap_leaky_psycopg_is_reclaimed_by_gc(conn_cap: Path) -> None:
    """What really happens: psycopg_pool's dropped pools are garbage-collected and their connections closed."""
    row = summary(conn_cap).loc["leaky-psycopg"]
    assert row["requests"] > 0
    assert row["error_rate"] < 0.5, row["errors"]
    assert row["errors_53300"] < row["requests"] / 2
    # still one new session per request: each leaked pool opened its connection
    assert row["sessions_opened"] >= row["requests"] / 2


# -- cold-start ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cold_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_scenario(tmp_path_factory, "cold-start", ["pool-eager-asyncpg", "pool-lazy-asyncpg"])


def test_cold_start_eager_is_ready_later_and_answers_first_requests_no_slower(cold_start: Path) -> None:
    s = summary(cold_start)
    eager, lazy = s.loc["pool-eager-asyncpg"], s.loc["pool-lazy-asyncpg"]
    assert eager["failures"] == 0 and lazy["failures"] == 0
    for row in (eager, lazy):
        assert row["first_request_ms"] > 0 and row["first10_p50_ms"] > 0 and row["time_to_ready_s"] > 0
    # The startup hook itself (the target's own clock, /stats ready_at - started_at): eager fills its pool.
    hook = {}
    for t in s.index:
        stats = json.loads((cold_start / "raw" / s.loc[t, "cell_id"] / "stats.json").read_text())
        hook[t] = stats["ready_at"] - stats["started_at"]
    assert hook["pool-eager-asyncpg"] > hook["pool-lazy-asyncpg"]
    # Process start to /ready includes interpreter start-up, which is noisier than the pool fill: wide margin.
    assert eager["time_to_ready_s"] >= lazy["time_to_ready_s"] - 0.5
    # Its first requests find open connections: not slower than lazy's, which open them (wide margin).
    assert eager["first_request_ms"] <= lazy["first_request_ms"] + 30
    assert eager["first10_p50_ms"] <= lazy["first10_p50_ms"] + 30
    assert eager["conn_peak"] == 10  # pool_min connections before the first request
    assert lazy["sessions_opened"] <= 8  # opened on demand, at most one per concurrent client


# -- shutdown (SIGTERM) and shutdown-kill (SIGKILL) ----------------------------------------------------
@pytest.fixture(scope="module")
def shutdown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_scenario(tmp_path_factory, "shutdown", ["pool-eager-asyncpg"])


@pytest.fixture(scope="module")
def shutdown_kill(smoke_run: Path) -> Path:
    return smoke_run  # the smoke profile kills pool-eager-asyncpg (the session's run, conftest.py)


def test_sigterm_logs_the_exit_and_releases_every_connection(shutdown: Path) -> None:
    row = summary(shutdown).loc["pool-eager-asyncpg"]
    assert "sigterm" in events(shutdown, "pool-eager-asyncpg")
    assert row["target_exit"] == 0
    assert row["shutdown_logged"]
    assert 0 <= row["release_s"] < 10  # PostgreSQL showed no connection of the target afterwards
    assert row["errors_after_action"] <= 2  # in-flight requests are drained, not dropped


def test_sigkill_runs_no_hook_and_loses_in_flight_requests(shutdown_kill: Path) -> None:
    row = summary(shutdown_kill, "shutdown-kill").loc["pool-eager-asyncpg"]
    assert "sigkill" in events(shutdown_kill, "pool-eager-asyncpg", "shutdown-kill")
    assert row["target_exit"] == -9
    assert not row["shutdown_logged"]
    assert 0 <= row["release_s"] < 10  # the kernel closes the sockets; PostgreSQL notices
    assert row["errors_after_action"] >= 1


# -- idle-timeout --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idle_timeout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_scenario(tmp_path_factory, "idle-timeout", ["global-asyncpg", "pool-eager-asyncpg"])


def test_idle_timeout_kills_the_global_connection_asyncpg_pool_reconnects(idle_timeout: Path) -> None:
    s = summary(idle_timeout)
    assert "mark:second-burst" in events(idle_timeout, "global-asyncpg")
    assert not s.loc["global-asyncpg", "recovered"]
    assert s.loc["global-asyncpg", "errors_after_action"] > 0
    # asyncpg's pool sees the server close the idle connections and opens new ones on acquire
    assert s.loc["pool-eager-asyncpg", "recovered"]
    assert s.loc["pool-eager-asyncpg", "errors_after_action"] <= 2


# -- the arithmetic, on made-up outcomes ---------------------------------------------------------------
def _final(ticks: dict[float, dict[str, int]], spans: list[list] | None = None) -> dict:
    out = {"ticks": {str(round(t * 10)): v for t, v in ticks.items()}, "stopped": max(ticks) + 2}
    if spans is not None:
        out["failure_spans_s"] = spans
    return out


def test_action_metrics_outage_recovery_and_recovered() -> None:
    t0 = 1000.0
    ticks = {t0 + i / 10: {"ok": 10} for i in range(30)}  # 3 s healthy
    ticks |= {t0 + 3 + i / 10: {"ConnectionRefusedError": 5} for i in range(10)}  # 1 s down
    ticks |= {t0 + 4.5 + i / 10: {"ok": 10} for i in range(30)}  # back 0.5 s after db-up
    ev = [(t0, "load-start"), (t0 + 3.0, "db-stop:fast"), (t0 + 4.0, "db-up")]
    m = F.action_metrics(None, [], ev, t0, final=_final(ticks))  # type: ignore[arg-type]
    assert m["errors_after_action"] == 50
    assert m["outage_s"] == pytest.approx(1.0, abs=0.11)
    assert m["recovery_s"] == pytest.approx(0.6, abs=0.11)
    assert m["recovered"] is True
    dead = {t: v for t, v in ticks.items() if t < t0 + 3} | {t0 + 3 + i / 10: {"InterfaceError": 5} for i in range(40)}
    m = F.action_metrics(None, [], ev, t0, final=_final(dead))  # type: ignore[arg-type]
    assert m["recovered"] is False and m["recovery_s"] is None


def test_accepted_failures_count_requests_in_flight_at_the_signal() -> None:
    t0 = 1000.0
    ticks = {t0 + i / 10: {"ok": 10} for i in range(20)} | {t0 + 2.1: {"ConnectionRefusedError": 30}}
    spans = [  # the signal at t0 + 2.003; failure times floored to 10 ms
        [t0 + 2.0025, t0 + 2.0, "ConnectionRefusedError", 3],  # in flight, re-sent, refused
        [t0 + 2.0035, t0 + 2.0, "ConnectionRefusedError", 20],  # sent just after, in the same 10 ms: not counted
        [t0 + 2.06, t0 + 2.06, "ConnectionRefusedError", 7],  # sent after: not counted
        [t0 + 1.5, t0 + 1.5, "HTTPError", 2],  # failed before the signal: not counted
    ]
    ev = [(t0, "load-start"), (t0 + 2.003, "sigkill")]
    m = F.action_metrics(None, [], ev, t0, final=_final(ticks, spans))  # type: ignore[arg-type]
    assert m["errors_after_action"] == 3
    assert m["recovered"] is None and m["outage_s"] is None
