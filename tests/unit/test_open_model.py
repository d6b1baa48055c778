"""Open-model load, the arithmetic: due times, rate stages, a step's verdict, the capacity search, the planning
of arrival and capacity cells, their scenario keys, and capacity.csv across a resume (no load, no database)."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.errors import ConnbenchError
from benchmarks.load import arrival as A
from benchmarks.load.plan import Stage
from benchmarks.results import summary as S
from benchmarks.results.runfolder import Run
from benchmarks.run.cells import plan
from benchmarks.run.scenario import load_profile, parse_scenario


def test_gaps_average_to_the_rate() -> None:
    rng = random.Random(1)
    for arrival in A.ARRIVALS:
        gaps = [A.gap(200.0, arrival, rng) for _ in range(20_000)]
        assert sum(gaps) / len(gaps) == pytest.approx(1 / 200, rel=0.05), arrival
    assert len({A.gap(50.0, "uniform", rng) for _ in range(10)}) == 1
    assert len({A.gap(50.0, "poisson", rng) for _ in range(10)}) == 10


def test_rate_at_follows_stages_and_ramps() -> None:
    stages = [{"duration": 2, "rps": 100}, {"duration": 4, "rps": 300, "ramp": True}, {"duration": 1, "rps": 50}]
    assert A.rate_at(stages, 0) == 100
    assert A.rate_at(stages, 1.9) == 100
    assert A.rate_at(stages, 2) == 100  # a ramp starts from the previous stage's rate
    assert A.rate_at(stages, 4) == pytest.approx(200)
    assert A.rate_at(stages, 6.5) == 50
    assert A.rate_at(stages, 7) is None


def _step(**kw) -> A.Step:
    base = {"rate": 100.0, "seconds": 2.0, "scheduled": 200, "requests": 200, "failures": 0, "dropped": 0,
            "late": 0, "p99_ms": 10.0}  # fmt: skip
    return A.Step(**{**base, **kw})


def test_verdict_names_why_a_step_failed() -> None:
    assert A.verdict(_step(), 50) == ""
    assert A.verdict(_step(late=150), 50) == ""  # late alone is not a failure: its latency counts in p99
    assert A.verdict(_step(p99_ms=80.0), 50) == "p99 80 ms > 50 ms"
    assert A.verdict(_step(failures=4), 50).startswith("errors 2.0%")
    assert A.verdict(_step(dropped=20, scheduled=220), 50).startswith("dropped")
    assert A.verdict(_step(requests=150), 50) == "completed 150 of 200 due"
    assert A.verdict(_step(requests=150, scheduled=160), 50) == ""  # fewer drawn than the rate: not a failure
    assert A.verdict(_step(requests=0), 50) == "no request completed"


def _search_until_done(search: A.Search, capacity: float, limit: int = 40) -> list[float]:
    tried = []
    while (rate := search.next()) is not None and len(tried) < limit:
        tried.append(rate)
        search.record(rate, rate <= capacity)
    return tried


@pytest.mark.parametrize("capacity", [30, 180, 650, 3000])
def test_search_brackets_the_capacity(capacity: float) -> None:
    search = A.Search(start=100, growth=2, precision=0.1, max_rps=5000)
    tried = _search_until_done(search, capacity)
    assert len(tried) < 20
    assert search.passed <= capacity < search.failed
    assert (search.failed - search.passed) / search.passed <= 0.1 + 1e-9


def test_search_stops_at_max_rps_and_when_nothing_passes() -> None:
    search = A.Search(start=100, growth=2, max_rps=400)
    assert _search_until_done(search, 10_000) == [100, 200, 400]
    search = A.Search(start=100, growth=2)
    assert _search_until_done(search, 0) == [100, 50, 25]  # not below start / growth**3
    assert search.passed == 0


def test_capacity_result_picks_the_highest_passing_step() -> None:
    def rec(rate: float, ok: bool, reason: str = "") -> dict:
        return {**vars(_step(rate=rate, requests=int(rate * 2))), "rps": rate, "ok": ok, "reason": reason,
                "start": rate, "end": rate + 2, "response_times": {"3.5": int(rate * 2)}, "errors": {}}  # fmt: skip

    cfg = {"slo_ms": 50.0, "max_rps": 5000.0, "budget": 20.0}
    final = {"search": {"steps": [rec(100, True), rec(400, False, "p99 90 ms > 50 ms"), rec(200, True)],
                        "search_s": 12.3}, "open": {}}  # fmt: skip
    narrowed, row = A.capacity_result(final, cfg)
    assert row["sustainable_rps"] == 200 and row["failed_at_rps"] == 400 and row["reason"].startswith("p99")
    assert row["steps"] == 3 and row["search_s"] == 12.3
    assert narrowed["requests"] == 400 and narrowed["stopped"] - narrowed["measure_start"] == 2
    assert set(row) | {"cell_id", "target", "strategy", "driver", "repeat"} == set(S.CAPACITY_COLUMNS)
    _, none = A.capacity_result({"search": {"steps": []}}, cfg)
    assert none["sustainable_rps"] == 0 and none["reason"] == "no step completed"


def test_arrival_and_capacity_cells_are_planned_by_rate_and_by_target() -> None:
    arrival, capacity = load_profile("smoke", ["arrival", "capacity"])
    cells = plan([arrival, capacity], ["pool-eager-asyncpg", "per-request-asyncpg", "global-asyncpg"], named=True)
    ids = [c.id for c in cells]
    assert "arrival.pool-eager-asyncpg.rps100.r1" in ids and "arrival.per-request-asyncpg.rps400.r1" in ids
    assert "capacity.pool-eager-asyncpg.r1" in ids and not any("global" in i for i in ids)
    assert len(ids) == len(set(ids))
    assert arrival.cell_kind.stages(arrival, 400) == (Stage(3.0, rps=400),)
    assert capacity.total_seconds() == capacity.capacity["budget"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('kind = "arrival"\n[load]\nrates = []', "'rates' must be a non-empty list"),
        ('kind = "arrival"\n[load]\nrates = [100]\narrival = "bursty"', "'arrival' must be one of poisson, uniform"),
        ('kind = "capacity"\n[capacity]\nslo = 50', "[capacity]: unknown key 'slo'"),
        ('kind = "capacity"\n[capacity]\nbudget = "long"', "key 'budget' must be float"),
    ],
)
def test_open_model_typos_are_one_line(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text + "\n[profiles.smoke]\n")
    with pytest.raises(ConnbenchError) as err:
        parse_scenario(path, "smoke")
    assert words in str(err.value) and str(path) in str(err.value)


def test_capacity_rows_survive_a_resume_and_follow_their_cells(tmp_path: Path) -> None:
    """capacity.csv is written with each capacity cell, read back by a resumed run, appended to, and a row
    whose cell is run again (its summary row dropped by reconcile) goes with it."""
    manifest = {"cells_done": []}
    run = Run(tmp_path, manifest)
    for target in ("pool-eager-asyncpg", "per-request-asyncpg"):
        cid = f"capacity.{target}.r1"
        (tmp_path / "raw" / cid).mkdir(parents=True)
        run.add({"cell_id": cid, "target": target}, capacity={"cell_id": cid, "target": target, "sustainable_rps": 100})
    resumed = Run(tmp_path, manifest)
    assert [r["target"] for r in resumed.capacity] == ["pool-eager-asyncpg", "per-request-asyncpg"]
    (tmp_path / "raw" / "capacity.per-request-asyncpg.r1").rmdir()  # its raw folder is gone: it runs again
    resumed.reconcile(["capacity.pool-eager-asyncpg.r1", "capacity.per-request-asyncpg.r1"])
    rows = pd.read_csv(tmp_path / "capacity.csv")
    assert list(rows.columns) == S.CAPACITY_COLUMNS and list(rows["target"]) == ["pool-eager-asyncpg"]
    cid = "capacity.per-request-asyncpg.r1"
    (tmp_path / "raw" / cid).mkdir()
    resumed.add({"cell_id": cid}, capacity={"cell_id": cid, "target": "per-request-asyncpg", "sustainable_rps": 50})
    assert list(pd.read_csv(tmp_path / "capacity.csv")["sustainable_rps"]) == [100, 50]
