"""model.csv: a model per target fitted on some cells of a run and checked on cells it did not see. On the committed
reference run (distance cells at 0 and 10 ms with TLS, pool-size cells on loopback) and on tests/data/compare/base
(steady cells only). Pure logic: nothing is started."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.results import model as M
from benchmarks.results import summary_json
from benchmarks.results.load import load_run

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "results" / "reference"
STEADY_ONLY = REPO / "tests" / "data" / "compare" / "base"


@pytest.fixture(scope="module")
def ref() -> M.Model:
    return M.fit(load_run(REFERENCE))


def cell(run_dir: Path, cell_id: str) -> pd.Series:
    s = load_run(run_dir).summary
    return s[s["cell_id"] == cell_id].iloc[0]


def test_every_prediction_is_of_a_real_cell_the_component_did_not_see(ref: M.Model) -> None:
    summary = ref.run.summary.set_index("cell_id")
    assert ref.components
    for c in ref.components:
        for r in c.rows:
            assert r["held_out"] not in c.fitted_on, (c.name, c.target, r["held_out"])
            measured = summary.loc[r["held_out"], c.quantity]
            assert r["measured"] == pytest.approx(measured)
            if measured:
                assert r["rel_error"] == pytest.approx((r["predicted"] - measured) / measured)
            else:  # a cell that measured 0 (PostgreSQL's CPU read 0 over a short window): no error
                assert math.isnan(r["rel_error"])
        for fitted in c.fitted_on:
            assert fitted in summary.index


def test_latency_is_the_loopback_cell_plus_round_trips_not_fitted_on_the_far_cell(ref: M.Model) -> None:
    c = ref.find("latency-p50", "pool-eager-asyncpg", "", True)
    assert c is not None
    near = cell(REFERENCE, "distance.pool-eager-asyncpg.u8.tls.r1")
    far = cell(REFERENCE, "distance.pool-eager-asyncpg.u8.rtt10.tls.r1")
    assert c.fitted_on == [near["cell_id"]] and c.held_out == [far["cell_id"]]
    # asyncpg's pool: the query and the reset on release, 2 round trips
    assert c.rows[0]["predicted"] == pytest.approx(near["latency_p50_ms"] + 2 * 10)


def test_a_client_per_request_pays_the_baselines_round_trips_per_connection(ref: M.Model) -> None:
    b = ref.run.baseline
    tls_rt = float(b[(b["mode"] == "connect") & (b["tls"] == True)]["round_trips"].iloc[0])  # noqa: E712
    c = ref.find("latency-p50", "per-request-asyncpg", "", True)
    assert c is not None and c.params["round_trips"] == pytest.approx(tls_rt + 2)
    # next to the app, PgBouncer's client connection does not cross the distance: only the queries do
    near_app = ref.find("latency-p50", "pgbouncer-asyncpg", "near-app", True)
    near_db = ref.find("latency-p50", "pgbouncer-asyncpg", "near-db", True)
    assert near_app is not None and near_db is not None
    assert near_db.params["round_trips"] - near_app.params["round_trips"] == pytest.approx(tls_rt)


def test_a_component_over_the_limit_says_so_and_is_not_used(ref: M.Model) -> None:
    over = [c for c in ref.components if c.error is not None and c.error > M.ERROR_LIMIT]
    assert over, "the reference run has components the held-out cells refute"
    table = ref.table()
    for c in over:
        assert not c.used
        same = (table["component"] == c.name) & (table["target"] == c.target) & (table["pooler"] == c.pooler)
        rows = table[same & (table["tls"] == c.tls)]
        assert len(rows) == len(c.rows)
        assert not rows["used"].any()
    assert table.loc[table["rel_error"].abs() > M.ERROR_LIMIT, "over_limit"].all()


def test_pool_ceiling_fits_the_smallest_and_largest_pool_and_predicts_the_others(ref: M.Model) -> None:
    c = ref.find("pool-ceiling", "pool-eager-asyncpg")
    assert c is not None
    small = cell(REFERENCE, "pool-size.pool-eager-asyncpg.u64.pool_max1.r1")
    large = cell(REFERENCE, "pool-size.pool-eager-asyncpg.u64.pool_max64.r1")
    assert c.fitted_on == [small["cell_id"], large["cell_id"]]
    assert c.params["hold_ms"] == pytest.approx(1000 / small["rps"])
    summary = pd.read_csv(REFERENCE / "summary.csv")
    every = summary.loc[summary["scenario"] == "pool-size", "cell_id"]
    assert sorted(c.held_out) == sorted(set(every) - set(c.fitted_on))  # the other sizes, and every size at 10 ms
    assert any(r["rtt_ms"] == 10 for r in c.rows)
    for r in c.rows:  # Little's law: min(pool × workers / hold, the unconstrained rate); asyncpg: 2 round trips
        hold = c.params["hold_ms"] + 2 * r["rtt_ms"]
        expected = min(r["pool_max"] * 1000 / hold, large["rps"])
        assert r["predicted"] == pytest.approx(expected)


def test_pool_connections_are_workers_times_pool_max(ref: M.Model) -> None:
    c = ref.find("connections", "pool-eager-asyncpg", "", False)
    assert c is not None and c.fitted_on == [] and c.rows
    for r in c.rows:
        assert r["predicted"] == r["pool_max"]  # one worker per target in these cells


def test_database_cpu_is_ms_per_request_times_the_rate(ref: M.Model) -> None:
    c = ref.find("db-cpu", "per-request-asyncpg", "", False)
    assert c is not None
    fit = cell(REFERENCE, c.fitted_on[0])
    for r in c.rows:
        held = cell(REFERENCE, r["held_out"])
        assert r["predicted"] == pytest.approx(fit["db_cpu_ms_per_request"] * held["rps"] / 10)


def test_a_run_without_distance_cells_has_no_latency_component() -> None:
    m = M.fit(load_run(STEADY_ONLY))
    assert not [c for c in m.components if c.name.startswith("latency")]
    assert not [c for c in m.components if c.name == "pool-ceiling"]


def test_three_rtts_add_a_check_of_the_fitted_slope() -> None:
    g = pd.DataFrame(
        {"cell_id": ["a", "b", "c"], "rtt_ms": [0.0, 2.0, 10.0], "latency_p50_ms": [5.0, 7.0, 16.0],
         "strategy": ["pool-eager"] * 3}
    )  # fmt: skip
    c = M._slope_check(g, "pool-eager-psycopg", "", False)
    assert c is not None and c.fitted_on == ["a", "b"] and c.held_out == ["c"]
    assert c.rows[0]["predicted"] == pytest.approx(15.0)


def test_model_csv_is_written_with_summary_json(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(REFERENCE, run, ignore=shutil.ignore_patterns("raw", "figures", "report.html"))
    summary_json.write(run)
    with open(run / M.FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0]) == M.MODEL_COLUMNS
    latency = [r for r in rows if r["component"] == "latency-p50" and r["target"] == "pool-eager-asyncpg"]
    assert latency[0]["held_out"] == "distance.pool-eager-asyncpg.u8.rtt10.tls.r1"
    assert {r["used"] for r in rows} == {"True", "False"}


def test_the_pool_ceiling_at_a_distance_is_predicted_from_loopback() -> None:
    # a real run's pool-size cells on loopback and at 10 ms: the hold is fitted on loopback only
    run_dir = REPO / "tests" / "data" / "pool-distance"
    c = M.fit(load_run(run_dir)).find("pool-ceiling", "pool-eager-asyncpg")
    assert c is not None and all(".rtt10." not in f for f in c.fitted_on)
    far = {r["held_out"]: r for r in c.rows if r["rtt_ms"] == 10}
    assert len(far) == 4
    one = far["pool-size.pool-eager-asyncpg.u64.pool_max1.rtt10.r1"]
    assert one["predicted"] == pytest.approx(1000 / (c.params["hold_ms"] + 2 * 10))  # query and reset
    # where the pool is the limit (1, 4 and 16 connections for 64 users), Little's law holds within 10 %
    for size in (1, 4, 16):
        assert abs(far[f"pool-size.pool-eager-asyncpg.u64.pool_max{size}.rtt10.r1"]["rel_error"]) < 0.1
