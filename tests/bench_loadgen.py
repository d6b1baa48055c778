"""Benchmark (run by hand, not collected by pytest): what the load generator and a cell's set-up cost.

    .venv/bin/python tests/bench_loadgen.py [--seconds 10] [--users 32] [--repeats 3]

1. The locustfile's own work per request: connbench's locustfile against a bare FastHttpUser locustfile (and
   wrk, when installed) on the same pool-eager-asyncpg target, interleaved repeats; prints the medians and the
   ratio connbench/bare (README records it; the goal is at least 0.9).
2. The time a smoke cell spends outside its measured window: the steady smoke scenario on six targets, per
   cell within the cell loop and end to end (PostgreSQL's start and the verify step included).
Timings live here and in README, never in test assertions.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers import CONNBENCH, REPO, start_target

from benchmarks.load import LOCUSTFILE
from benchmarks.stack.postgres import EmbeddedPostgres

BARE = """
from locust import FastHttpUser, constant, task


class Bare(FastHttpUser):
    wait_time = constant(0)

    @task
    def db(self):
        self.client.get("/db")
"""
TARGET = "pool-eager-asyncpg"


def locust_rps(locustfile: Path, user_class: str, url: str, users: int, seconds: int, tmp: Path) -> float:
    prefix = tmp / f"{user_class}-{time.monotonic_ns()}"
    subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--host", url, "-u", str(users),
         "-r", "10000", "-t", f"{seconds}s", "--csv", str(prefix), "--only-summary", "--loglevel", "ERROR",
         user_class],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    with open(f"{prefix}_stats.csv", newline="") as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    return float(rows["Aggregated"]["Requests/s"])


def wrk_rps(url: str, users: int, seconds: int) -> float | None:
    if not shutil.which("wrk"):
        return None
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(users), "-d", f"{seconds}s", f"{url}/db"], capture_output=True, text=True
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else None


def loadgen(seconds: int, users: int, repeats: int) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="connbench-bench-"))
    bare = tmp / "bare_locustfile.py"
    bare.write_text(BARE)
    results: dict[str, list[float]] = {"connbench": [], "bare": [], "wrk": []}
    try:
        with EmbeddedPostgres() as pg, start_target(TARGET, pg.dsn) as target:
            for _ in range(repeats):
                results["connbench"].append(locust_rps(LOCUSTFILE, TARGET, target.url, users, seconds, tmp))
                results["bare"].append(locust_rps(bare, "Bare", target.url, users, seconds, tmp))
                w = wrk_rps(target.url, users, seconds)
                if w is not None:
                    results["wrk"].append(w)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in results.items() if v}
    return {
        "users": users,
        "seconds": seconds,
        "repeats": repeats,
        "rps": results,
        "median_rps": med,
        "connbench_over_bare": round(med["connbench"] / med["bare"], 3),
        "connbench_over_wrk": round(med["connbench"] / med["wrk"], 3) if "wrk" in med else None,
    }


CELL_TARGETS = (
    "pool-eager-asyncpg,per-request-asyncpg,pool-lazy-psycopg,global-asyncpg,prisma-global,worker-per-request"
)


def cell_overhead() -> dict[str, object]:
    """Wall time of the steady smoke scenario on six named targets: per cell within the cell loop (from the
    run's own progress lines, which give the seconds since the first cell started) and end to end (the
    verify step, PostgreSQL's start and the baseline's absence included), minus the planned load seconds."""
    out = Path(tempfile.mkdtemp(prefix="connbench-bench-")) / "run"
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [*CONNBENCH, "run", "--profile", "smoke", "--scenarios", "steady", "--targets", CELL_TARGETS,
             "--no-report", "--no-baseline", "--out", str(out)],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"connbench run failed: {proc.stderr.strip()[-500:]}")
        wall = time.monotonic() - started
        with open(out / "summary.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        manifest = json.loads((out / "manifest.json").read_text())
        sc = manifest["scenarios"]["steady"]
        planned = sc["warmup"] + sc["duration"]
        loop = [float(m) for m in re.findall(r"^cell \d+/\d+ \S+ \((\d+) s\)$", proc.stderr, re.M)]
        return {
            "cells": len(rows),
            "wall_s": round(wall, 1),
            "planned_load_s_per_cell": planned,
            "outside_load_s_per_cell_in_loop": round(loop[-1] / len(rows) - planned, 2) if loop else None,
            "outside_load_s_per_cell_end_to_end": round(wall / len(rows) - planned, 2),
        }
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("loadgen", "cells"), help="one of the two measurements")
    args = ap.parse_args()
    if args.only != "cells":
        print(json.dumps({"loadgen": loadgen(args.seconds, args.users, args.repeats)}, indent=1), flush=True)
    if args.only == "loadgen":
        return
    print(json.dumps({"cell_overhead": cell_overhead()}, indent=1), flush=True)


if __name__ == "__main__":
    main()
