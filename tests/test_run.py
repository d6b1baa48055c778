"""`connbench run` end to end: real PostgreSQL, real targets under uvicorn, real Locust runs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import psutil
import pytest
from helpers import CONNBENCH, REPO, run_connbench, sigint_default, temp_dirs, wait_until

from benchmarks.results.summary import SUMMARY_COLUMNS, TIMESERIES_COLUMNS
from benchmarks.run.options import RunOptions
from benchmarks.run.scenario import load_profile
from benchmarks.stack.pgbouncer import missing_reason
from targets.registry import TARGETS

POOL_EAGER = [t for t in TARGETS if TARGETS[t].strategy == "pool-eager"]
PER_REQUEST = [t for t, x in TARGETS.items() if x.session_per_request and "leaky" not in x.strategy]
RUNNABLE = [t for t in TARGETS if not (TARGETS[t].via_pgbouncer and missing_reason())]
# Every python target (the strategies this file checks) and the first of each other family: those families'
# every target has its own file (tests/test_family_*.py, test_families.py), and the quick profile runs them all.
FAMILY_FIRSTS = {TARGETS[t].family: t for t in reversed(RUNNABLE)}
THROUGH_LOCUST = [t for t in RUNNABLE if TARGETS[t].family == "python" or FAMILY_FIRSTS[TARGETS[t].family] == t]
# The session's smoke profile run (conftest.py) has steady cells of some of them; this module runs the rest.
IN_SMOKE_PROFILE = [t for t in THROUGH_LOCUST if {sc.name: sc for sc in load_profile("smoke")}["steady"].selects(t)]
OWN = [t for t in THROUGH_LOCUST if t not in IN_SMOKE_PROFILE]


@dataclasses.dataclass
class Interrupted:
    """What a Ctrl-C in the middle of the run left, read before it was resumed."""

    returncode: int | None
    stderr: str
    alive: list[psutil.Process]  # its processes still running 10 s after it exited
    leftovers: set[str]  # temporary folders it left
    manifest: dict
    kept: pd.DataFrame  # its summary.csv


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, set[str], Interrupted]:
    """The smoke profile's steady scenario over every runnable python target and one of each other family that
    the session's smoke profile run leaves out, named (the baseline is that run's too,
    test_smoke_profile_run_has_its_baseline): interrupted with Ctrl-C once its second cell runs, then resumed."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    before = temp_dirs()
    proc = subprocess.Popen(
        [*CONNBENCH, "run", "--profile", "smoke", "--scenarios", "steady", "--targets", ",".join(OWN),
         "--out", str(out), "--no-report", "--no-baseline"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        preexec_fn=sigint_default,
    )  # fmt: skip
    try:
        wait_until(lambda: (out / "summary.csv").exists(), timeout=120, what="the first cell")
        wait_until(lambda: len(_children(proc.pid)) >= 3, timeout=60, what="the second cell's processes")
        kids = _children(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(kids, timeout=10)
    manifest = json.loads((out / "manifest.json").read_text())
    interrupted = Interrupted(proc.returncode, err, alive, temp_dirs() - before, manifest,
                              pd.read_csv(out / "summary.csv"))  # fmt: skip
    resumed = run_connbench("run", "--resume", str(out), "--no-report", timeout=900)
    return out, resumed, temp_dirs() - before, interrupted


def test_smoke_run_writes_every_file(smoke) -> None:
    out, proc, leftovers, _ = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not leftovers
    for name in ("manifest.json", "summary.csv", "timeseries.csv"):
        assert (out / name).stat().st_size > 0, name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["cells_missing"] == []
    assert manifest["profile"] == "smoke"
    for key in ("python", "postgresql", "locust", "asyncpg", "psycopg"):
        assert manifest["versions"][key]
    assert manifest["machine"]["cores"] >= 1 and manifest["target_settings"]["pool_max"] > 0
    assert manifest["options"]["profile"] == "smoke" and manifest["options"]["scenarios"] == ["steady"]
    assert manifest["options"]["targets"] == OWN and manifest["options"]["baseline"] is False
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(pd.read_csv(out / "timeseries.csv").columns) == TIMESERIES_COLUMNS
    assert sorted(summary["target"]) == sorted(OWN)
    for cell in summary["cell_id"]:
        raw = out / "raw" / cell
        assert (raw / "locust_stats.csv").exists() and (raw / "target.log").exists()


def test_smoke_profile_run_has_its_baseline(smoke_run: Path) -> None:
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    assert manifest["options"]["baseline"] is True and manifest["status"] == "complete"
    baseline = pd.read_csv(smoke_run / "baseline.csv")
    pooled = baseline[(baseline["tool"] == "pgbench") & (baseline["rtt_ms"] == 0) & ~baseline["tls"].astype(bool)]
    tps = pooled.set_index("mode")["tps"]
    # PostgreSQL's own ceiling: a new connection per transaction costs throughput (wide margin)
    assert tps["pooled"] > 2 * tps["connect-per-transaction"], baseline
    # and its CPU: a new backend and a scram exchange per transaction (wide margin: about 100× here)
    cpu = pooled.set_index("mode")["db_cpu_ms_per_tx"]
    assert cpu["pooled"] > 0 and cpu["connect-per-transaction"] > 3 * cpu["pooled"], baseline


def test_postgres_spends_more_cpu_per_request_on_a_connection_per_request(smoke_run: Path) -> None:
    s = pd.read_csv(smoke_run / "summary.csv")
    steady = s[s["scenario"] == "steady"].set_index("target")
    per, pool = steady.loc["per-request-asyncpg"], steady.loc["pool-eager-asyncpg"]
    assert pool["db_cpu_pct"] > 0 and pool["db_cpu_ms_per_request"] > 0
    assert 0 < pool["db_backend_mb"] < 1000  # its 10 backends' proportional set size, read when the load ended
    # each request forks a backend and runs a scram exchange (wide margin: about 60× here)
    assert per["db_cpu_ms_per_request"] > 3 * pool["db_cpu_ms_per_request"], steady["db_cpu_ms_per_request"]


def test_smoke_run_numbers_tell_the_strategies_apart(smoke, smoke_run: Path) -> None:
    out, proc, _, _ = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = pd.read_csv(smoke_run / "summary.csv")
    profile = profile[(profile["scenario"] == "steady") & profile["target"].isin(IN_SMOKE_PROFILE)]
    s = pd.concat([pd.read_csv(out / "summary.csv"), profile]).set_index("target")
    assert sorted(s.index) == sorted(THROUGH_LOCUST)
    healthy = [t for t in s.index if TARGETS[t].strategy in ("per-request", "pool-eager", "pool-lazy", "pgbouncer")]
    assert s.loc[healthy, "valid"].all(), s.loc[healthy, ["valid", "invalid_reason"]]
    for t in [t for t in PER_REQUEST if t in THROUGH_LOCUST]:
        assert s.loc[t, "sessions_per_request"] >= 0.9, t
    for t in POOL_EAGER:
        assert s.loc[t, "sessions_per_request"] <= 0.05, t
        assert s.loc[t, "error_rate"] == 0
    assert s.loc["global-asyncpg", "error_rate"] > 0
    assert "InterfaceError" in json.loads(s.loc["global-asyncpg", "errors"])
    # the three request counts agree in every cell (Locust, the target's /stats, PostgreSQL's sessions)
    assert s["counts_agree"].all(), s.loc[~s["counts_agree"].astype(bool), ["locust_requests", "target_requests"]]
    # every target answers within the window, but worker-global, whose requests hang until the request timeout
    answering = s.drop(index="worker-global", errors="ignore")
    assert (answering["requests"] > 0).all() and (answering["rps"] > 0).all()
    # sub-millisecond resolution is kept where latencies are small
    fine = s.loc[POOL_EAGER, "latency_p50_ms"]
    assert ((fine * 10).round() == fine * 10).all()


def test_load_workers_count_every_request(tmp_path: Path) -> None:
    """Locust's master with two worker processes: its count includes the workers' last reports."""
    out = tmp_path / "run"
    proc = run_connbench(
        "run", "--profile", "smoke", "--scenarios", "steady", "--targets", "per-request-asyncpg",
        "--load-workers", "2", "--no-baseline", "--no-report", "--out", str(out), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = pd.read_csv(out / "summary.csv").iloc[0]
    # How many depends on the machine's speed (100 in 1 s on a busy one). The workers report every 3 s, so
    # after 1 s of load every request is in their last reports: any count that agrees with the target's counts them.
    assert row["valid"] and row["locust_requests"] > 0
    assert row["counts_agree"], row[["locust_requests", "target_requests", "sessions_opened"]]


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def test_interrupt_keeps_cells_and_resume_finishes(smoke) -> None:
    out, resumed, _, interrupted = smoke
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    assert "--resume" in interrupted.stderr
    assert not interrupted.alive, [p.pid for p in interrupted.alive]
    assert not interrupted.leftovers
    manifest, kept = interrupted.manifest, interrupted.kept
    assert manifest["status"] == "interrupted"
    assert 1 <= len(kept) < len(OWN)
    assert set(manifest["cells_done"]) == set(kept["cell_id"])
    assert len(manifest["cells_missing"]) == len(OWN) - len(kept)
    assert not (out / "raw" / ".partial").exists()

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["cells_missing"] == []
    done = pd.read_csv(out / "summary.csv")
    assert sorted(done["target"]) == sorted(OWN)
    assert done["cell_id"].is_unique
    assert set(kept["cell_id"]) <= set(done["cell_id"])  # the cells kept at the interrupt stay


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--targets", "nope"], {}, ["unknown target 'nope'", "pool-eager-asyncpg"]),
        (["--scenarios", "nope"], {}, ["unknown scenario 'nope'", "steady"]),
        (["--profile", "huge"], {}, ["unknown profile"]),
        (["--out", "/proc/connbench-cannot-write"], {}, ["cannot write the results folder"]),
        ([], {"CONNBENCH_PG_BINDIR": "/nonexistent"}, ["no PostgreSQL server binaries"]),
        (["--resume", "/nonexistent-run"], {}, ["not a connbench run folder"]),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], env: dict[str, str], words: list[str]) -> None:
    if "--out" not in args and "--resume" not in args:
        args = [*args, "--out", str(tmp_path / "run")]
    proc = run_connbench("run", "--profile", "smoke", *args, "--no-report", env=env, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("connbench: error:"), proc.stderr
    for w in words:
        assert w in lines[0]
    assert not (tmp_path / "run").exists()  # nothing half-written


# -- the options a run takes, kept in its manifest -------------------------------------------------------
def test_options_come_back_from_the_manifest_without_the_password() -> None:
    from targets.yours import url_targets

    mine = url_targets(["mine=http://127.0.0.1:8000"], [])
    options = RunOptions(
        profile="smoke", targets=None, scenarios=("steady", "arrival"), out=Path("/tmp/run"), baseline=False,
        load_workers=2, path=((0.0, 10.0), (True,), None), user_targets=tuple(mine),
        dsn="postgresql://me:s3cret@127.0.0.1:5432/db", load_master="0.0.0.0:5557",
    )  # fmt: skip
    stored = json.loads(json.dumps({"profile": "smoke", "options": options.to_json()}))
    assert "s3cret" not in json.dumps(stored) and stored["options"]["dsn"] == "postgresql://me:***@127.0.0.1:5432/db"
    back = RunOptions.from_manifest(stored, Path("/tmp/run"), dsn=options.dsn)
    assert back == dataclasses.replace(options, resume=Path("/tmp/run"))
    assert back.user_targets[0].url == "http://127.0.0.1:8000"


def test_options_of_a_run_written_before_they_were_stored() -> None:
    manifest = {
        "profile": "smoke", "scenarios": {"steady": {}}, "targets": ["pool-eager-asyncpg"], "targets_named": True,
        "load_workers": 3, "baseline": False, "path_override": [[0, 10], None, ["near-app"]], "user_targets": [],
        "load_master": "",
    }  # fmt: skip
    options = RunOptions.from_manifest(manifest, Path("/tmp/run"), dsn=None)
    assert options == RunOptions(
        profile="smoke", targets=("pool-eager-asyncpg",), scenarios=("steady",), out=Path("/tmp/run"),
        resume=Path("/tmp/run"), baseline=False, load_workers=3, path=((0, 10), None, ("near-app",)),
    )  # fmt: skip
