"""Where a request's time goes (acquire vs query in /stats; every target's own histograms are checked with its
contract, tests/test_targets.py), swept target settings, and the pool-size and slow-work scenarios on a real
stack."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.errors import ConnbenchError
from benchmarks.load.targetstats import conn_wanted, timing_columns, window_histogram
from benchmarks.results import data as R
from benchmarks.run.cells import Cell, plan
from benchmarks.run.scenario import load_profile, parse_scenario
from targets.python.timing import Histogram
from targets.registry import TARGETS

SMOKE_TARGET = "pool-eager-asyncpg"


# -- units ---------------------------------------------------------------------------------------------
def test_histogram_buckets_like_locust() -> None:
    h = Histogram()
    for seconds in (0.00043, 0.00044, 0.0476, 0.347, 0.0):
        h.add(seconds)
    assert h.as_dict() == {"0": 1, "0.4": 2, "48": 1, "350": 1}


def test_window_is_the_difference_of_two_snapshots_of_one_process() -> None:
    before = {"pid": 1, "acquire_ms": {"0.1": 5, "20": 2}, "query_ms": {"0.5": 7}}
    after = {"pid": 1, "acquire_ms": {"0.1": 6, "20": 2, "30": 99}, "query_ms": {"0.5": 107}}
    assert window_histogram(before, after, "acquire_ms") == {0.1: 1, 30.0: 99}
    cols = timing_columns(before, after)
    assert cols["acquire_p50_ms"] == 30 and cols["query_p99_ms"] == 0.5
    # another worker process answered the second time: the end snapshot alone
    assert window_histogram({**before, "pid": 2}, after, "acquire_ms") == {0.1: 6, 20.0: 2, 30.0: 99}
    assert timing_columns(None, None) == dict.fromkeys(
        ["acquire_p50_ms", "acquire_p99_ms", "query_p50_ms", "query_p99_ms"]
    )
    assert conn_wanted(3, None, {"pool": {"pool_max": 10}}) == 30
    assert conn_wanted(3, {"pool": {}}) is None


def test_sweep_makes_one_cell_per_value_with_its_settings() -> None:
    sc = load_profile("full", ["pool-size"])[0]
    assert sc.sweep == {"pool_max": [1, 2, 4, 8, 16, 32, 64]}
    cells = [c for c in plan([sc], list(TARGETS)) if c.target == "pool-eager-asyncpg"]
    assert [c.id for c in cells[:5]] == [  # each repeat on every path of the full profile (loopback, 2, 10, 50 ms)
        "pool-size.pool-eager-asyncpg.u64.pool_max1.r1",
        "pool-size.pool-eager-asyncpg.u64.pool_max1.rtt2.r1",
        "pool-size.pool-eager-asyncpg.u64.pool_max1.rtt10.r1",
        "pool-size.pool-eager-asyncpg.u64.pool_max1.rtt50.r1",
        "pool-size.pool-eager-asyncpg.u64.pool_max1.r2",
    ]
    assert {dict(c.variant)["pool_max"] for c in cells} == {1, 2, 4, 8, 16, 32, 64}
    assert sc.target_env_for((("pool_max", 4),))["CONNBENCH_POOL_MAX"] == "4"
    slow = load_profile("quick", ["slow-work"])[0]
    assert slow.db_params_for((("hold", 1),)) == {"work_ms": 50, "hold": 1}
    assert slow.target_env_for((("hold", 1),))["CONNBENCH_POOL_MAX"] == "10"
    steady = load_profile("smoke", ["steady"])[0]
    assert Cell(steady, "global-asyncpg", 8, 1).id == "steady.global-asyncpg.u8.r1"  # no sweep, no suffix


def test_plateau_is_the_smallest_pool_within_five_percent_of_the_best() -> None:
    points = pd.DataFrame({"pool_max": [1, 2, 4, 8, 16], "rps": [100, 180, 290, 300, 297]})
    assert R.plateau(points)["pool_max"] == 4
    assert R.plateau(points.iloc[:0]) is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[sweep]\npool_size = [1, 2]\n", "unknown key 'pool_size'"),
        ("[sweep]\npool_max = []\n", "non-empty list"),
        ("[sweep]\npool_max = [1, 2.5]\n", "CONNBENCH_POOL_MAX='2.5' is not a number"),
        ("[load]\nparams = {work_ms = -1}\n", "must be a number >= 0"),
        ("[load]\nparams = {sleep = 1}\n", "unknown key 'sleep'"),
    ],
)
def test_sweep_typos_are_one_line_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "[profiles.smoke]\n")
    with pytest.raises(ConnbenchError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        parse_scenario(path, "smoke")


# -- the scenarios on the embedded stack ---------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(smoke_run: Path) -> pd.DataFrame:
    """The pool-size and slow-work cells of the session's smoke profile run (conftest.py)."""
    summary = pd.read_csv(smoke_run / "summary.csv")
    summary = summary[summary["scenario"].isin(["pool-size", "slow-work"])]
    assert set(summary["target"]) == {SMOKE_TARGET}, summary["target"]
    assert summary["valid"].all(), summary[["cell_id", "invalid_reason"]]
    return summary


def test_pool_size_smoke_queues_for_one_connection_not_for_many(smoke: pd.DataFrame) -> None:
    s = smoke[smoke["scenario"] == "pool-size"].set_index("pool_max").sort_index()
    assert len(s) >= 3 and s["cell_id"].str.contains(r"\.pool_max\d+\.r1$").all()
    assert [json.loads(p)["pool_max"] for p in s["params"]] == list(s.index)
    smallest, largest = s.iloc[0], s.iloc[-1]
    assert smallest.name == 1 and smallest["conn_peak"] <= 1
    # 64 users queue for one connection. asyncpg's pool is a LIFO asyncio queue that lets a new request take a
    # just-released connection ahead of the woken waiter: the median request may not wait at all, the tail does.
    assert smallest["acquire_p99_ms"] > 5 * smallest["query_p99_ms"], smallest[["acquire_p99_ms", "query_p99_ms"]]
    assert largest["acquire_p50_ms"] < largest["query_p50_ms"]  # a connection for every user
    assert (s["conn_wanted"] == s.index).all() and (s["conn_slots"] > 0).all()


def test_slow_work_smoke_holding_the_connection_caps_throughput(smoke: pd.DataFrame) -> None:
    s = smoke[smoke["scenario"] == "slow-work"]
    by_hold = {json.loads(p)["hold"]: r for p, (_, r) in zip(s["params"], s.iterrows(), strict=True)}
    hold, release = by_hold[1], by_hold[0]
    assert hold["pool_max"] == release["pool_max"] == 10 and hold["users"] == 32
    served = {h: r["rps"] * (1 - r["error_rate"]) for h, r in by_hold.items()}
    # 10 connections each held 50 ms serve at most 200 requests/s
    assert served[1] <= 200 * 1.25, served
    timeouts = json.loads(hold["errors"]).get("PoolTimeout", 0)
    assert timeouts > 0 or hold["acquire_p99_ms"] >= 40, (timeouts, hold["acquire_p99_ms"])
    assert served[0] > 2 * served[1], served
    assert release["error_rate"] == 0 and release["acquire_p99_ms"] < hold["acquire_p99_ms"]
