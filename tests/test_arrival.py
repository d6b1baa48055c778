"""Open-model load: requests due at a rate, latency from when each was due, drops counted; the capacity search.

The end-to-end tests read the session's smoke profile run (per-request-asyncpg's arrival and capacity cells, the
closed-loop steady cells) and run the arrival and capacity scenarios on pool-eager-asyncpg once per module; the
stall tests drive Locust directly, with a target stopped by SIGSTOP for a second.

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
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, run_connbench, wait_until

from benchmarks.load import LOCUSTFILE
from benchmarks.load.plan import LoadPlan, Stage
from benchmarks.results import summary as S

# -- open and closed load: the session's smoke profile run and pool-eager's arrival and capacity cells -------
DRIVERS = ("asyncpg",)  # the load models do not depend on the driver: one keeps the run short
CAPACITY_TARGETS = [f"{s}-{d}" for d in DRIVERS for s in ("pool-eager", "per-request")]
SCENARIOS = ("steady", "arrival", "capacity")


@pytest.fixture(scope="module")
def runs(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The session's smoke profile run (per-request-asyncpg's arrival, capacity and steady cells, and
    pool-eager-asyncpg's steady cell) and this module's own run of the arrival and capacity scenarios on
    pool-eager-asyncpg, which the profile runs on per-request-asyncpg only."""
    out = tmp_path_factory.mktemp("arrival") / "run"
    proc = run_connbench("run", "--profile", "smoke", "--scenarios", "arrival,capacity", "--targets",
                         "pool-eager-asyncpg", "--out", str(out), "--no-report", "--no-baseline",
                         timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [smoke_run, out]


def _read(runs: list[Path], name: str) -> pd.DataFrame:
    """`name` (summary.csv, timeseries.csv, capacity.csv) of both runs, CAPACITY_TARGETS' rows in SCENARIOS."""
    both = pd.concat([pd.read_csv(r / name) for r in runs], ignore_index=True)
    mine = both["target"].isin(CAPACITY_TARGETS)
    return both[mine & both["scenario"].isin(SCENARIOS)] if "scenario" in both else both[mine]


def _summary(runs: list[Path]) -> pd.DataFrame:
    return _read(runs, "summary.csv").set_index("cell_id")


def test_every_cell_says_its_load_model(runs: list[Path]) -> None:
    s = _summary(runs)
    assert set(s.loc[s["scenario"] == "steady", "load_model"]) == {"closed"}
    assert set(s.loc[s["scenario"].isin(["arrival", "capacity"]), "load_model"]) == {"open"}
    assert s.loc[s["load_model"] == "closed", "offered_rps"].isna().all()
    assert "arrival.pool-eager-asyncpg.rps400.r1" in s.index and "capacity.per-request-asyncpg.r1" in s.index


def test_pool_eager_below_capacity_gets_what_is_offered(runs: list[Path]) -> None:
    s = _summary(runs)
    for rate in (100, 400):
        row = s.loc[f"arrival.pool-eager-asyncpg.rps{rate}.r1"]
        assert row["valid"] and row["offered_rps"] == rate
        assert row["rps"] == pytest.approx(rate, rel=0.1), row[["rps", "requests", "measure_s"]]
        assert row["dropped"] == 0 and row["failures"] == 0
        assert row["senders_peak"] < 100  # concurrency grew only as far as needed
        assert row["counts_agree"]


def test_per_request_above_capacity_falls_behind_and_closed_loop_hides_it(runs: list[Path]) -> None:
    s = _summary(runs)
    over = s.loc["arrival.per-request-asyncpg.rps400.r1"]
    pool = s.loc["arrival.pool-eager-asyncpg.rps400.r1"]
    assert over["valid"], over["invalid_reason"]
    assert over["rps"] < 0.9 * over["offered_rps"]  # it could not keep up
    assert over["dropped"] + over["late"] > 0
    assert over["latency_p99_ms"] > 10 * pool["latency_p99_ms"], (over["latency_p99_ms"], pool["latency_p99_ms"])
    # latency from the due time grows over the cell as the backlog builds, until every sender is busy (from
    # then on requests due are dropped): the first second's p50 is below the later seconds'
    assert over["senders_peak"] == 100 and over["dropped"] > 0
    ts = _read(runs, "timeseries.csv")
    mine = ts[(ts["cell_id"] == over.name) & ts["rps"].notna() & (ts["rps"] > 0)].sort_values("t")
    p50 = list(mine["latency_p50_ms"])
    assert len(p50) >= 2 and p50[0] < max(p50[1:]), p50
    # a closed loop of the same strategy at about the same throughput reports a much lower p99
    closed = s[(s["scenario"] == "steady") & (s["target"] == "per-request-asyncpg")].iloc[0]
    assert closed["rps"] > 0.5 * over["rps"], (closed["rps"], over["rps"])
    assert closed["latency_p99_ms"] * 4 < over["latency_p99_ms"], (closed["latency_p99_ms"], over["latency_p99_ms"])


def test_capacity_orders_pool_eager_above_per_request_within_budget(runs: list[Path]) -> None:
    cap = _read(runs, "capacity.csv").set_index("target")
    assert list(cap.columns) == [c for c in S.CAPACITY_COLUMNS if c != "target"]
    assert sorted(cap.index) == sorted(CAPACITY_TARGETS)
    for d in DRIVERS:
        pool, per = cap.loc[f"pool-eager-{d}"], cap.loc[f"per-request-{d}"]
        assert pool["sustainable_rps"] > per["sustainable_rps"], (d, pool["step_log"], per["step_log"])
        assert per["failed_at_rps"] > 0 and per["reason"]
    assert (cap["search_s"] <= cap["budget_s"]).all(), cap[["search_s", "budget_s"]]
    s = _summary(runs)
    for cid, row in cap.reset_index().set_index("cell_id").iterrows():
        assert s.loc[cid, "offered_rps"] == row["sustainable_rps"] or row["sustainable_rps"] == 0


# -- a one-second stall of the target, open and closed ---------------------------------------------------
def _locust_with_stall(url: str, pid: int, plan: LoadPlan, user_class: str) -> dict:
    """Run Locust on the target with the plan; SIGSTOP the target's process group 1.5 s after the load
    started and SIGCONT it a second later. The locustfile's final.json."""
    out = Path(plan.out)
    out.mkdir(parents=True)
    plan_file = plan.write(out / "plan.json")
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url, "--only-summary",
           "--stop-timeout", "3", "--loglevel", "WARNING", "--connbench-plan", str(plan_file), user_class]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
    open_plan = LoadPlan(str(tmp_path / "open"), stages=(Stage(5, rps=100),), arrival="uniform", max_senders=200)
    open_final = _locust_with_stall(t.url, t.proc.pid, open_plan, "arrival-pool-eager-asyncpg")
    closed_plan = LoadPlan(str(tmp_path / "closed"), stages=(Stage(5, users=4),))
    closed_final = _locust_with_stall(t.url, t.proc.pid, closed_plan, "pool-eager-asyncpg")
    open_p99 = S.latency_stats(open_final["response_times"])["latency_p99_ms"]
    closed_p99 = S.latency_stats(closed_final["response_times"])["latency_p99_ms"]
    assert open_final["open"]["dropped"] == 0 and open_final["failures"] == 0
    assert open_p99 >= 800, open_p99
    assert closed_final["requests"] > open_final["requests"]
    assert closed_p99 * 4 < open_p99, (closed_p99, open_p99)


def test_readme_documents_every_capacity_column() -> None:
    readme = (REPO / "docs" / "results.md").read_text()
    for col in S.CAPACITY_COLUMNS + S.OPEN_COLUMNS:
        assert f"`{col}`" in readme, col
