"""`connbench advise`: a deployment checked against the model of a run (the committed reference run). Asserts
behaviour (what fits and why not, where the numbers come from, one-line user errors), never timings. Pure logic:
nothing is started."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import connbench_here

from benchmarks.results import advice as A

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "results" / "reference"


cli = connbench_here


def rows(**deployment: object) -> dict[tuple[str, str], A.Row]:
    advice = A.advise(REFERENCE, A.Deployment(**deployment))  # type: ignore[arg-type]
    return {(r.target, r.pooler): r for r in advice.rows}


def test_a_plan_over_max_connections_is_infeasible() -> None:
    fits = rows(replicas=4, workers=4, max_connections=100, rtt_ms=2)
    assert fits[("pool-eager-asyncpg", "—")].feasible == "yes"
    tight = rows(replicas=4, workers=4, max_connections=20, reserved=3, rtt_ms=2)
    pool = tight[("pool-eager-asyncpg", "—")]
    assert pool.connections == 16 * pool.pool_max  # replicas × workers × pool_max
    assert pool.feasible == "no" and any("connections, 17 available" in r for r in pool.reasons)


def test_worker_global_and_every_kept_client_are_infeasible_on_the_edge() -> None:
    edge = rows(runtime="edge", rtt_ms=50, tls=True, rate=50)
    assert edge[("worker-global", "—")].feasible == "no"
    for target in ("pool-eager-asyncpg", "global-asyncpg", "prisma-global"):
        assert edge[(target, "—")].feasible == "no"
        assert any("across requests" in r for r in edge[(target, "—")].reasons)
    # the pooler next to the Worker is not ruled out, and its latency comes from checked components
    near_app = edge[("worker-pgbouncer", "near-app")]
    assert near_app.feasible != "no" and "held-out error" in near_app.evidence["p99_ms"]


def test_worker_targets_do_not_run_long_running() -> None:
    long = rows()
    assert long[("worker-per-request", "—")].feasible == "no"
    assert long[("global-asyncpg", "—")].feasible == "no"  # breaks under concurrency in the steady cells


def test_latency_is_used_only_from_components_within_the_error_limit() -> None:
    edge = rows(runtime="edge", rtt_ms=50, tls=True, rate=50)
    # worker-per-request's held-out p50 error is over 25 % in the reference run: no latency, no verdict
    per_request = edge[("worker-per-request", "—")]
    assert per_request.p50_ms is None and per_request.feasible == "unknown"
    assert "not used: held-out error" in per_request.evidence["p50_ms"]


def test_latency_grows_with_the_round_trips_at_the_users_rtt() -> None:
    near, far = rows(rtt_ms=0, tls=True), rows(rtt_ms=20, tls=True)
    a, b = near[("pool-eager-asyncpg", "—")], far[("pool-eager-asyncpg", "—")]
    assert a.p50_ms is not None and b.p50_ms is not None
    assert b.p50_ms - a.p50_ms == pytest.approx(2 * 20)  # asyncpg's pool: query and reset


def test_a_missed_slo_is_infeasible() -> None:
    slow = rows(rtt_ms=20, tls=True, p99_ms=1)
    for r in slow.values():
        if r.p99_ms is not None:
            assert r.feasible == "no" and any("misses the SLO" in x for x in r.reasons)


def test_serverless_instances_multiply_connections() -> None:
    fn = rows(runtime="serverless", rate=300, rtt_ms=20)
    r = fn[("per-request-asyncpg", "—")]
    assert r.p50_ms is not None and r.instances == math.ceil(300 * r.p50_ms / 1000)
    pool = fn[("pool-eager-asyncpg", "—")]
    assert pool.pool_max == 1 and pool.connections == pool.instances


def test_pool_size_reaches_the_rate_and_is_compared_with_the_formulas() -> None:
    advice = A.advise(REFERENCE, A.Deployment(replicas=2, workers=2, rate=2000, rtt_ms=10, cores=4))
    p = advice.pool
    assert p is not None and p.pool_max is not None
    assert p.rate_per_process == 500
    assert p.pool_max >= math.ceil(p.rate_per_process * p.hold_ms / 1000)  # Little's law's floor
    assert (p.prisma, p.hikari) == (9, 8)
    assert A.wait_p99_ms(p.pool_max, p.rate_per_process, p.hold_ms) <= p.hold_ms


def test_erlang_c() -> None:
    assert A.erlang_c(1, 0.5) == pytest.approx(0.5)  # one server: P(wait) = utilisation
    assert A.erlang_c(2, 3.0) == 1.0
    assert math.isinf(A.wait_p99_ms(2, 1000, 10))  # 10 Erlangs on 2 connections


def test_the_command_prints_a_table_and_json() -> None:
    code, out, err = cli("advise", "--run", str(REFERENCE), "--replicas", "4", "--workers", "4", "--rtt", "2")
    assert code == 0, err
    assert "pool-eager-asyncpg" in out and "Recommendation:" in out and "this machine's" in out
    code, out, _ = cli("advise", "--run", str(REFERENCE), "--runtime", "edge", "--tls", "--rtt", "50", "--json")
    data = json.loads(out)
    assert code == 0 and data["deployment"]["runtime"] == "edge"
    assert {r["target"] for r in data["rows"] if r["feasible"] == "no"} >= {"worker-global"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "abc"], "--rate 'abc' is not a number"),
        (["--replicas", "0"], "--replicas '0' must be at least 1"),
        (["--rtt", "-5"], "--rtt '-5' must be at least 0"),
        (["--max-connections", "10", "--reserved", "10"], "leaves none"),
    ],
)
def test_bad_numbers_exit_1_with_one_line(argv: list[str], message: str) -> None:
    code, out, err = cli("advise", "--run", str(REFERENCE), *argv)
    assert code == 1 and not out
    assert len(err.strip().splitlines()) == 1 and message in err


def test_a_folder_without_summary_csv_exits_1_with_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(REFERENCE / "manifest.json", run / "manifest.json")
    code, out, err = cli("advise", "--run", str(run))
    assert code == 1 and not out
    assert len(err.strip().splitlines()) == 1 and "summary.csv" in err


def test_the_default_run_is_the_newest_complete_folder(tmp_path: Path) -> None:
    assert A.default_run(tmp_path / "none") == tmp_path / "none" / "reference"
    for name, status in (("old", "complete"), ("new", "complete"), ("newest", "incomplete")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"status": status}))
        (folder / "summary.csv").write_text("cell_id\n")
    now = time.time()
    for i, name in enumerate(("old", "new", "newest")):
        os.utime(tmp_path / name / "manifest.json", (now + i, now + i))
    assert A.default_run(tmp_path) == tmp_path / "new"
