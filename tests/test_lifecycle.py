"""The harness under crashes, concurrent writers and damaged folders: nothing lost, nothing left running.

Real `connbench run` processes on the smoke profile, killed or interrupted at a random moment and resumed.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from helpers import CONNBENCH, REPO, run_connbench, sigint_default, wait_until

from benchmarks.results.runfolder import Run, RunLock
from benchmarks.results.summary import SUMMARY_COLUMNS
from benchmarks.stack.procs import OWNER_FILE, make_temp_dir, reclaim_orphans

TARGETS = "pool-eager-asyncpg,per-request-asyncpg,pool-lazy-psycopg,pool-eager-psycopg"
RUN_ARGS = ["run", "--profile", "smoke", "--scenarios", "steady", "--targets", TARGETS, "--no-report", "--no-baseline"]
SERVICE_WORDS = ("postgres -D", "pgbouncer", "benchmarks.cli serve", "locust")


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*CONNBENCH, *RUN_ARGS, "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        preexec_fn=sigint_default,
    )  # fmt: skip


def _owned_dirs(pid: int) -> set[Path]:
    """Temporary directories whose owner file names `pid`."""
    import tempfile

    found = set()
    for path in Path(tempfile.gettempdir()).glob("connbench-*"):
        try:
            if json.loads((path / OWNER_FILE).read_text())["pid"] == pid:
                found.add(path)
        except (OSError, ValueError, KeyError):
            continue
    return found


# -- one writer per run folder -------------------------------------------------------------------------
def test_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    first.acquire()
    try:
        (tmp_path / "manifest.json").write_text(
            json.dumps({"profile": "smoke", "scenarios": {}, "targets": [], "cells_done": []})
        )
        proc = run_connbench("run", "--resume", str(tmp_path), "--no-report", timeout=60)
    finally:
        first.release()
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert "\n" not in line and "being written by another connbench run" in line and f"pid {os.getpid()}" in line


def test_damaged_manifest_and_conflicting_options_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    proc = run_connbench("run", "--resume", str(tmp_path), timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "damaged" in proc.stderr
    (tmp_path / "manifest.json").write_text(
        json.dumps({"profile": "smoke", "scenarios": {}, "targets": [], "cells_done": []})
    )
    proc = run_connbench("run", "--resume", str(tmp_path), "--targets", "pool-eager-asyncpg", timeout=60)
    assert proc.returncode == 1 and "drop --targets" in proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--targets", ","], {}, "--targets names nothing"),
        (["--load-workers", "0"], {}, "--load-workers"),
        ([], {"CONNBENCH_POOL_MAX": "abc"}, "CONNBENCH_POOL_MAX='abc' is not a number"),
        (["--out", "README.md"], {}, "is a file"),
    ],
)
def test_unchecked_values_are_refused_before_anything_starts(
    tmp_path: Path, args: list[str], env: dict[str, str], words: str
) -> None:
    out = tmp_path / "run"
    if "--out" not in args:
        args = [*args, "--out", str(out)]
    proc = run_connbench(*RUN_ARGS[:3], *args, "--no-report", env=env, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert not out.exists()


def test_same_second_runs_get_their_own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.results import runfolder

    monkeypatch.setattr(runfolder, "RESULTS_ROOT", tmp_path)
    a = runfolder.prepare_out(None, "20260101T000000Z-smoke")
    b = runfolder.prepare_out(None, "20260101T000000Z-smoke")
    assert a != b and a.is_dir() and b.is_dir()


# -- resume checks what it finds -------------------------------------------------------------------------
def _write_summary(path: Path, rows: list[dict], tail: str = "") -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        fh.write(tail)


def test_reconcile_drops_half_written_duplicate_and_rawless_cells(tmp_path: Path) -> None:
    plan = ["s.a.u1.r1", "s.b.u1.r1", "s.c.u1.r1", "s.d.u1.r1"]
    for cid in plan[:3]:
        (tmp_path / "raw" / cid).mkdir(parents=True)
    row = {c: "1" for c in SUMMARY_COLUMNS}
    rows = [{**row, "cell_id": "s.a.u1.r1"}, {**row, "cell_id": "s.a.u1.r1"}, {**row, "cell_id": "s.d.u1.r1"}]
    _write_summary(tmp_path / "summary.csv", rows, tail="s.c.u1.r1,s,c\n")  # a half-written last line
    (tmp_path / "timeseries.csv").write_text("cell_id,t\ns.a.u1.r1,1\ns.a.u1.r1,1\ns.c.u1.r1,1\n")
    manifest = {"cells_done": ["s.a.u1.r1", "s.b.u1.r1", "s.a.u1.r1"]}
    run = Run(tmp_path, manifest)
    repaired = run.reconcile(plan)
    assert manifest["cells_done"] == ["s.a.u1.r1"]
    text = "\n".join(repaired)
    for words in ("s.c.u1.r1: half-written", "s.a.u1.r1: listed twice", "s.d.u1.r1: raw/", "s.b.u1.r1: in the"):
        assert words in text, text
    assert list(pd.read_csv(tmp_path / "summary.csv")["cell_id"]) == ["s.a.u1.r1"]
    assert len(pd.read_csv(tmp_path / "timeseries.csv")) == 1


def test_orphaned_temp_dirs_are_reclaimed_only_when_their_owner_died() -> None:
    mine = make_temp_dir("connbench-test-")
    dead = make_temp_dir("connbench-test-")
    child = subprocess.Popen(["true"])
    child.wait()
    gone = json.dumps({"pid": child.pid, "created": time.time()})
    busy = make_temp_dir("connbench-test-")  # its owner died, but a process (a server shutting down) works in it
    for path in (dead, busy):
        (path / OWNER_FILE).write_text(gone)
    (busy / "data").mkdir()
    server = subprocess.Popen(["sleep", "60"], cwd=busy / "data")
    try:
        removed = reclaim_orphans()
        assert dead in removed and not dead.exists()
        assert mine.exists()
        assert busy.exists() and busy not in removed
        server.kill()
        server.wait()
        assert busy in reclaim_orphans() and not busy.exists()  # once nobody works in it
    finally:
        import shutil

        server.kill()
        for path in (mine, dead, busy):
            shutil.rmtree(path, ignore_errors=True)


# -- a crash at a random moment, then --resume ---------------------------------------------------------------
# (Ctrl-C then --resume: test_run.py's test_interrupt_keeps_cells_and_resume_finishes.)
@pytest.mark.parametrize("sig", [signal.SIGKILL])
def test_random_crash_then_resume_runs_every_cell_once(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "run"
    proc = _start(out)
    try:
        wait_until(lambda: (out / "manifest.json").exists(), timeout=60, what="the run to start")
        time.sleep(random.uniform(0.0, 8.0))  # anywhere in the first two or three cells, or between them
        kids = _descendants(proc.pid)
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Every process the run started dies with it, however it died.
    _, alive = psutil.wait_procs(kids, timeout=20)
    assert not alive, [(p.pid, p.cmdline()) for p in alive if p.is_running()]
    killed = sig == signal.SIGKILL and proc.returncode == -signal.SIGKILL  # (not when the run had ended first)
    if killed:
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "running"  # as the dead writer left it; resume says so
    resumed = run_connbench("run", "--resume", str(out), "--no-report", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if killed:
        assert "died without finishing" in resumed.stderr
        assert not _owned_dirs(proc.pid)  # the dead run's temporary directories were reclaimed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["cells_missing"] == []
    done = pd.read_csv(out / "summary.csv")
    assert sorted(done["cell_id"]) == sorted(manifest["cells_done"])
    assert sorted(done["target"]) == sorted(TARGETS.split(","))
    assert done["cell_id"].is_unique
    ts = pd.read_csv(out / "timeseries.csv")
    assert not ts.duplicated(["cell_id", "t"]).any()
    assert set(ts["cell_id"]) <= set(done["cell_id"])
    assert sorted(p.name for p in (out / "raw").iterdir()) == sorted(done["cell_id"])
