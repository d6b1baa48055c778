"""Unit tests of the harness's pure logic: scenario files and the summary arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.errors import ConnbenchError
from benchmarks.load.plan import LoadPlan, Stage
from benchmarks.results import summary as S
from benchmarks.run import kinds
from benchmarks.run.cells import Cell, plan
from benchmarks.run.scenario import available, load_profile, parse_scenario

GOOD = """
description = "test"
targets = ["pool-eager", "global-asyncpg"]
[load]
users = [1, 4]
warmup = 1
duration = 2
[profiles.smoke]
users = [2]
[profiles.quick]
repeats = 2
"""


def write(tmp_path: Path, text: str, name: str = "sc.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_profile_overrides_load_and_selects_targets(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    smoke = parse_scenario(path, "smoke")
    assert smoke is not None and smoke.users == (2,) and smoke.warmup == 1.0 and smoke.repeats == 1
    quick = parse_scenario(path, "quick")
    assert quick is not None and quick.users == (1, 4) and quick.repeats == 2
    assert parse_scenario(path, "full") is None  # no [profiles.full]: not in that profile
    assert quick.selects("pool-eager-psycopg") and quick.selects("global-asyncpg")
    assert not quick.selects("global-psycopg")
    cells = plan([quick], ["global-asyncpg", "global-psycopg", "pool-eager-asyncpg"])
    assert len(cells) == 2 * 2 * 2  # levels x repeats x selected targets
    assert len({c.id for c in cells}) == len(cells)


def test_named_targets_take_every_cell_their_scenario_is_meant_for(tmp_path: Path) -> None:
    text = GOOD.replace("[profiles.quick]", '[profiles.quick]\ntargets = ["pool-eager-asyncpg"]')
    quick = parse_scenario(write(tmp_path, text), "quick")
    assert quick is not None
    assert not quick.selects("pool-eager-psycopg") and quick.selects("pool-eager-psycopg", named=True)
    assert not quick.selects("global-psycopg", named=True)  # the file's own list still holds
    named = plan([quick], ["pool-eager-psycopg", "global-psycopg"], named=True)
    assert {c.target for c in named} == {"pool-eager-psycopg"}
    assert plan([quick], ["pool-eager-psycopg", "global-psycopg"]) == []


def test_profiles_fit_their_time_goals() -> None:
    """The goals of the default (quick) and smoke profiles, planned from the scenario files: the quick profile's
    cells within 7 minutes, so that `make run` (with the stack, verify, baseline and report, about a minute more)
    ends within 8, and smoke's cells within 2 minutes, with every runnable target (the per-cell overhead is
    measured in tests/bench_loadgen.py). Smoke runs every scenario once, each failure scenario included (the
    silent drop alone needs an idle gap longer than its middlebox's limit, twice): 115 s planned."""
    from benchmarks.run.cells import PER_CELL_OVERHEAD_S, planned_seconds
    from targets.registry import TARGETS

    every = list(TARGETS)
    assert PER_CELL_OVERHEAD_S <= 1.0
    assert planned_seconds(plan(load_profile("quick"), every)) <= 7 * 60
    assert planned_seconds(plan(load_profile("smoke"), every)) <= 120


def test_stages_substitute_the_level(tmp_path: Path) -> None:
    text = GOOD.replace(
        "duration = 2\n", 'duration = 2\nstages = [{duration = 2, users = 1}, {duration = 3, users = "level"}]\n'
    )
    sc = parse_scenario(write(tmp_path, text), "smoke")
    assert sc is not None
    assert sc.cell_kind.stages(sc, 2) == (Stage(2.0, users=1), Stage(3.0, users=2))
    assert sc.total_seconds() == 5.0


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD.replace("warmup = 1", "warmpu = 1"), ["sc.toml", "warmpu"]),
        (GOOD + "\n[profiles.huge]\n", ["sc.toml", "huge"]),
        (GOOD.replace('"global-asyncpg"', '"nope"'), ["sc.toml", "targets", "nope"]),
        (GOOD.replace("users = [2]", "users = []"), ["sc.toml", "users"]),
        (GOOD.replace("duration = 2", 'duration = "long"'), ["sc.toml", "duration"]),
        (GOOD + '\n[[actions]]\nat = 1\ndo = "explode"\n', ["sc.toml", "do"]),
        ("description = [", ["sc.toml", "TOML"]),
    ],
)
def test_bad_scenario_file_names_file_and_key(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(ConnbenchError) as err:
        parse_scenario(write(tmp_path, text), "smoke")
    for word in words:
        assert word in str(err.value)


def test_shipped_scenarios_parse_in_every_profile() -> None:
    names = available()
    assert {"steady", "spike"} <= set(names)
    for profile in ("smoke", "quick", "full"):
        for sc in load_profile(profile):
            assert sc.total_seconds() > 0


def test_every_kind_is_found_and_a_typo_names_them(tmp_path: Path) -> None:
    assert set(kinds.registry()) == {"load", "cold-start", "arrival", "capacity"}
    with pytest.raises(ConnbenchError, match="sc.toml: key 'kind' must be one of arrival, capacity, cold-start, load"):
        parse_scenario(write(tmp_path, 'kind = "laod"\n' + GOOD), "smoke")


def test_load_plan_round_trips_and_documents_the_cell(tmp_path: Path) -> None:
    sc = load_profile("smoke", ["capacity"])[0]
    cell = plan([sc], ["pool-eager-asyncpg"], named=True)[0]
    lp = sc.cell_kind.plan(cell, tmp_path, load_workers=2)
    assert lp.capacity is not None and lp.capacity.budget == sc.capacity["budget"] and lp.warmup == 0
    assert lp.is_open and lp.seconds == sc.total_seconds() and lp.max_senders == -(-sc.max_senders // 2)
    read = LoadPlan.read(lp.write(tmp_path / "plan.json"))
    assert read.out == str(tmp_path / lp.out) and read.stages == lp.stages and read.capacity == lp.capacity
    steady = load_profile("smoke", ["steady"])[0]
    closed = steady.cell_kind.plan(plan([steady], ["global-asyncpg"], named=True)[0], tmp_path, 1)
    assert not closed.is_open and closed.seconds == steady.warmup + steady.duration and closed.db_path == "/db"


def test_unknown_scenario_and_profile() -> None:
    with pytest.raises(ConnbenchError, match="unknown scenario 'nope'; scenarios: .*steady"):
        load_profile("quick", ["nope"])
    with pytest.raises(ConnbenchError, match="unknown profile"):
        load_profile("huge")


def test_latency_percentiles_keep_sub_millisecond_buckets() -> None:
    # 100 requests: 60 at 0.4 ms, 35 at 1.2 ms, 4 at 3.3 ms, 1 at 250 ms (Locust's percentile rule)
    hist = {"0.4": 60, "1.2": 35, "3.3": 4, "250": 1}
    out = S.latency_stats(hist)
    assert out["latency_p50_ms"] == 0.4
    assert out["latency_p90_ms"] == 1.2
    assert out["latency_p95_ms"] == 3.3
    assert out["latency_p99_ms"] == 250.0
    assert out["latency_max_ms"] == 250.0
    assert S.latency_stats({})["latency_p50_ms"] is None


def test_fine_bucket_resolution() -> None:
    assert S.fine_bucket(0.437) == 0.4
    assert S.fine_bucket(9.96) == 10.0
    assert S.fine_bucket(47.6) == 48
    assert S.fine_bucket(347) == 350
    assert S.fine_bucket(3432) == 3400


def test_counts_agree() -> None:
    assert S.counts_agree(1000, 1003, 1001, users=8, per_request=True)
    assert not S.counts_agree(1000, 1100, 1100, users=8, per_request=False)
    # per-request target with far fewer sessions than requests: disagreement
    assert not S.counts_agree(1000, 1000, 10, users=8, per_request=True)
    # ... unless those requests failed before a session existed (53300)
    assert S.counts_agree(1000, 1000, 100, users=8, per_request=True, failures=900)
    assert S.counts_agree(1000, 1000, 0, users=8, per_request=False)


def test_per_second_join_and_connection_figures() -> None:
    t0 = 1000.0
    history = [
        {
            "t": 1001.0,
            "users": 4,
            "requests": 100,
            "failures": 2,
            "phase": "warmup",
            "p50": 1.1,
            "p95": 2.0,
            "p99": 3.0,
        },
        {
            "t": 1002.0,
            "users": 4,
            "requests": 120,
            "failures": 0,
            "phase": "measure",
            "p50": 1.0,
            "p95": 1.9,
            "p99": 2.5,
        },
    ]
    app = "connbench:x"
    samples = [
        {"t": 1000.1, "connections": {app: {"total": 3, "active": 1, "idle": 2}}, "sessions": 10, "db_up": True},
        {"t": 1000.6, "connections": {app: {"total": 5, "active": 4, "idle": 1}}, "sessions": 12, "db_up": True},
        {"t": 1001.5, "connections": {}, "sessions": None, "db_up": False},
        {"t": 1001.9, "connections": {app: {"total": 2, "active": 0, "idle": 2}}, "sessions": 20, "db_up": True},
    ]
    rows = S.per_second(history, samples, app, t0, [(1001.2, "db-stop:fast")])
    by_t = {r["t"]: r for r in rows}
    assert by_t[0]["rps"] == 100 and by_t[0]["conn_total"] == 5 and by_t[0]["conn_active"] == 4
    assert by_t[1]["rps"] == 120 and by_t[1]["event"] == "db-stop:fast" and by_t[1]["db_up"] is False
    assert by_t[1]["sessions_opened"] == 8  # 20 - 12
    figs = S.connection_figures(samples, app, 1000.5, 1002.0)
    assert figs["conn_peak"] == 5
    assert figs["conn_mean"] == pytest.approx((5 + 2) / 2)


def test_cell_ids_are_stable() -> None:
    sc = load_profile("smoke", ["steady"])[0]
    assert Cell(sc, "global-asyncpg", 8, 1).id == "steady.global-asyncpg.u8.r1"


def test_readme_documents_every_results_column() -> None:
    readme = (Path(__file__).resolve().parents[2] / "docs" / "results.md").read_text()
    for col in S.SUMMARY_COLUMNS + S.TIMESERIES_COLUMNS:
        assert f"`{col}`" in readme, col


def test_a_silent_drop_middlebox_is_a_network_setting_that_needs_loopback_and_a_started_database(
    tmp_path: Path,
) -> None:
    from benchmarks.run.cells import skip_reason
    from targets.registry import get_target

    text = GOOD + '\n[network]\nidle_drop_s = 2\n[[actions]]\nat = 1\ndo = "freeze"\n[[actions]]\nat = 2\ndo = "thaw"\n'
    sc = parse_scenario(write(tmp_path, text), "smoke")
    assert sc.idle_drop_s == 2 and [a.do for a in sc.actions] == ["freeze", "thaw"]
    assert "middlebox" in (skip_reason(sc, get_target("pool-eager-asyncpg"), external_db=True) or "")
    assert "middlebox" in (skip_reason(sc, get_target("pool-eager-asyncpg"), False, rtt_ms=10) or "")
    assert "middlebox" in (skip_reason(sc, get_target("pgbouncer-asyncpg"), False) or "")
    with pytest.raises(ConnbenchError, match="idle_drop_s"):
        parse_scenario(write(tmp_path, GOOD + '\n[network]\nidle_drop_s = "long"\n'), "smoke")
