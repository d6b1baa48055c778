"""Open-model load: requests due at a rate, latency from when each was due, drops counted; the capacity search.

The end-to-end tests run `connbench run --profile smoke` (arrival, capacity and a closed-loop steady cell) once
per module, and drive Locust directly for the stall tests, with a target stopped by SIGSTOP for a second.

What they document:
- Above its capacity, connect-per-request falls behind its schedule: latency counted from when each request
  was due grows over the cell to many times pool-eager's at the same rate, and requests are sent late or
  dropped; a closed-loop cell with the same throughput shows a far lower p99, because its users simply
  waited (coordinated omission).
- A one-second stall of the target: in an arrival cell every request due during the stall waits for it, so
  p99 is about a second; in a closed-loop cell only the few requests in flight wait, so p99 barely moves.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, run_connbench, wait_until

from benchmarks.errors import ConnbenchError
from benchmarks.load import LOCUSTFILE
from benchmarks.load import arrival as A
from benchmarks.results import summary as S
from benchmarks.results.runfolder import Run
from benchmarks.run.cells import plan
from benchmarks.run.scenario import load_profile, parse_scenario

# -- pure logic ----------------------------------------------------------------------------------------


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
    assert arrival.load_stages(400) == [{"duration": 3.0, "rps": 400}]
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
        run.add({"cell_id": cid, "target": target, "_capacity": {"cell_id": cid, "target": target,
                 "sustainable_rps": 100}})  # fmt: skip
    resumed = Run(tmp_path, manifest)
    assert [r["target"] for r in resumed.capacity] == ["pool-eager-asyncpg", "per-request-asyncpg"]
    (tmp_path / "raw" / "capacity.per-request-asyncpg.r1").rmdir()  # its raw folder is gone: it runs again
    resumed.reconcile(["capacity.pool-eager-asyncpg.r1", "capacity.per-request-asyncpg.r1"])
    rows = pd.read_csv(tmp_path / "capacity.csv")
    assert list(rows.columns) == S.CAPACITY_COLUMNS and list(rows["target"]) == ["pool-eager-asyncpg"]
    cid = "capacity.per-request-asyncpg.r1"
    (tmp_path / "raw" / cid).mkdir()
    resumed.add({"cell_id": cid, "_capacity": {"cell_id": cid, "target": "per-request-asyncpg", "sustainable_rps": 50}})
    assert list(pd.read_csv(tmp_path / "capacity.csv")["sustainable_rps"]) == [100, 50]


# -- a smoke run: arrival, capacity and a closed-loop cell ----------------------------------------------
DRIVERS = ("asyncpg", "psycopg")
CAPACITY_TARGETS = [f"{s}-{d}" for d in DRIVERS for s in ("pool-eager", "per-request")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("arrival") / "run"
    proc = run_connbench("run", "--profile", "smoke", "--scenarios", "steady,arrival,capacity", "--targets",
                         ",".join(CAPACITY_TARGETS), "--out", str(out), "--no-report", "--no-baseline",
                         timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _summary(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "summary.csv").set_index("cell_id")


def test_every_cell_says_its_load_model(run_dir: Path) -> None:
    s = _summary(run_dir)
    assert set(s.loc[s["scenario"] == "steady", "load_model"]) == {"closed"}
    assert set(s.loc[s["scenario"].isin(["arrival", "capacity"]), "load_model"]) == {"open"}
    assert s.loc[s["load_model"] == "closed", "offered_rps"].isna().all()
    assert "arrival.pool-eager-asyncpg.rps400.r1" in s.index and "capacity.per-request-psycopg.r1" in s.index


def test_pool_eager_below_capacity_gets_what_is_offered(run_dir: Path) -> None:
    s = _summary(run_dir)
    for rate in (100, 400):
        row = s.loc[f"arrival.pool-eager-asyncpg.rps{rate}.r1"]
        assert row["valid"] and row["offered_rps"] == rate
        assert row["rps"] == pytest.approx(rate, rel=0.1), row[["rps", "requests", "measure_s"]]
        assert row["dropped"] == 0 and row["failures"] == 0
        assert row["senders_peak"] < 100  # concurrency grew only as far as needed
        assert row["counts_agree"]


def test_per_request_above_capacity_falls_behind_and_closed_loop_hides_it(run_dir: Path) -> None:
    s = _summary(run_dir)
    over = s.loc["arrival.per-request-asyncpg.rps400.r1"]
    pool = s.loc["arrival.pool-eager-asyncpg.rps400.r1"]
    assert over["valid"], over["invalid_reason"]
    assert over["rps"] < 0.9 * over["offered_rps"]  # it could not keep up
    assert over["dropped"] + over["late"] > 0
    assert over["latency_p99_ms"] > 10 * pool["latency_p99_ms"], (over["latency_p99_ms"], pool["latency_p99_ms"])
    # latency from the due time grows over the cell as the backlog builds, until every sender is busy (from
    # then on requests due are dropped): the first second's p50 is below the later seconds'
    assert over["senders_peak"] == 100 and over["dropped"] > 0
    ts = pd.read_csv(run_dir / "timeseries.csv")
    mine = ts[(ts["cell_id"] == over.name) & ts["rps"].notna() & (ts["rps"] > 0)].sort_values("t")
    p50 = list(mine["latency_p50_ms"])
    assert len(p50) >= 2 and p50[0] < max(p50[1:]), p50
    # a closed loop of the same strategy at about the same throughput reports a much lower p99
    closed = s[(s["scenario"] == "steady") & (s["target"] == "per-request-asyncpg")].iloc[0]
    assert closed["rps"] > 0.5 * over["rps"], (closed["rps"], over["rps"])
    assert closed["latency_p99_ms"] * 4 < over["latency_p99_ms"], (closed["latency_p99_ms"], over["latency_p99_ms"])


def test_capacity_orders_pool_eager_above_per_request_within_budget(run_dir: Path) -> None:
    cap = pd.read_csv(run_dir / "capacity.csv").set_index("target")
    assert list(cap.columns) == [c for c in S.CAPACITY_COLUMNS if c != "target"]
    assert sorted(cap.index) == sorted(CAPACITY_TARGETS)
    for d in DRIVERS:
        pool, per = cap.loc[f"pool-eager-{d}"], cap.loc[f"per-request-{d}"]
        assert pool["sustainable_rps"] > per["sustainable_rps"], (d, pool["step_log"], per["step_log"])
        assert per["failed_at_rps"] > 0 and per["reason"]
    assert (cap["search_s"] <= cap["budget_s"]).all(), cap[["search_s", "budget_s"]]
    s = _summary(run_dir)
    for cid, row in cap.reset_index().set_index("cell_id").iterrows():
        assert s.loc[cid, "offered_rps"] == row["sustainable_rps"] or row["sustainable_rps"] == 0


# -- a one-second stall of the target, open and closed ---------------------------------------------------
def _locust_with_stall(url: str, pid: int, out: Path, user_class: str, stages: list[dict], *extra: str) -> dict:
    """Run Locust on the target for the stages; SIGSTOP the target's process group 1.5 s after the load
    started and SIGCONT it a second later. The locustfile's final.json."""
    env = {**os.environ, "CONNBENCH_LOCUST_OUT": str(out), "CONNBENCH_STAGES": json.dumps(stages),
           "CONNBENCH_WARMUP": "0"}  # fmt: skip
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url, "--only-summary",
           "--stop-timeout", "3", "--loglevel", "WARNING", *extra, user_class]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (out / "started").exists(), timeout=60, what="Locust to start")
        time.sleep(1.5)
        os.killpg(pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)
        finally:
            os.killpg(pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    return json.loads((out / "final.json").read_text())


def test_a_stall_shows_in_open_load_and_hides_in_closed_load(serve, tmp_path: Path) -> None:
    """Both cells see the same one-second stall. The arrival cell keeps sending on schedule (100/s, senders
    enough for the whole stall), so the hundred requests due during it wait up to a second: p99 about 1 s.
    The closed loop's four users each wait once, four requests among thousands: p99 stays far below."""
    t = serve("pool-eager-asyncpg")
    arrival = ["--arrival", "uniform", "--max-senders", "200"]
    open_stages = [{"duration": 5, "rps": 100}]
    open_final = _locust_with_stall(t.url, t.proc.pid, tmp_path / "open", "arrival-pool-eager-asyncpg", open_stages,
                                    *arrival)  # fmt: skip
    closed_stages = [{"duration": 5, "users": 4}]
    closed_final = _locust_with_stall(t.url, t.proc.pid, tmp_path / "closed", "pool-eager-asyncpg", closed_stages)
    open_p99 = S.latency_stats(open_final["response_times"])["latency_p99_ms"]
    closed_p99 = S.latency_stats(closed_final["response_times"])["latency_p99_ms"]
    assert open_final["open"]["dropped"] == 0 and open_final["failures"] == 0
    assert open_p99 >= 800, open_p99
    assert closed_final["requests"] > open_final["requests"]
    assert closed_p99 * 4 < open_p99, (closed_p99, open_p99)


def test_readme_documents_every_capacity_column() -> None:
    readme = (REPO / "README.md").read_text()
    for col in S.CAPACITY_COLUMNS + S.OPEN_COLUMNS:
        assert f"`{col}`" in readme, col
