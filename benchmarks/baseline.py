"""`connbench baseline`: the database's own ceiling and the raw price of a connection.

pgbench runs the World point query of the targets with and without `-C` (a new connection per transaction),
same clients, so the report can show how far each target is from what PostgreSQL itself serves. Where wrk is
installed it also measures the HTTP ceiling of pool-eager-asyncpg /db, for comparison with what Locust reached.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.postgres import EmbeddedPostgres, find_bindir
from benchmarks.procs import free_port, stop_process

BASELINE_COLUMNS = ["tool", "mode", "clients", "duration_s", "tps", "latency_mean_ms", "connect_ms", "note"]
WORLD_SCRIPT = "\\set id random(1, 10000)\nSELECT id, randomnumber FROM world WHERE id = :id;\n"
WRK_TARGET = "pool-eager-asyncpg"


def parse_pgbench(text: str) -> dict[str, float | None]:
    """tps, mean latency and (with -C) mean connection time from pgbench's report."""

    def grab(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    return {
        "tps": grab(r"tps = ([\d.]+)"),
        "latency_mean_ms": grab(r"latency average = ([\d.]+) ms"),
        "connect_ms": grab(r"average connection time = ([\d.]+) ms"),
    }


def parse_wrk(text: str) -> dict[str, float | None]:
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)\b", text)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "tps": float(m.group(1)) if m else None,
        "latency_mean_ms": float(lat.group(1)) * scale[lat.group(2)] if lat else None,
    }


def pgbench_rows(pg: EmbeddedPostgres, clients: int, seconds: int) -> list[dict[str, Any]]:
    pgbench = find_bindir() / "pgbench"
    rows = []
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
        fh.write(WORLD_SCRIPT)
        script = fh.name
    try:
        for mode, extra in (("pooled", []), ("connect-per-transaction", ["-C"])):
            cmd = [str(pgbench), "-n", "-f", script, "-c", str(clients), "-j", str(min(clients, 2)),
                   "-T", str(seconds), *extra, pg.dsn]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
            figures = parse_pgbench(out.stdout)
            note = "" if out.returncode == 0 else (out.stderr.strip().splitlines() or ["pgbench failed"])[-1]
            rows.append({"tool": "pgbench", "mode": mode, "clients": clients, "duration_s": seconds, **figures,
                         "note": note})  # fmt: skip
    finally:
        Path(script).unlink(missing_ok=True)
    return rows


def wrk_rows(pg: EmbeddedPostgres, clients: int, seconds: int) -> list[dict[str, Any]]:
    from benchmarks.runner import start_target, wait_ready

    wrk = shutil.which("wrk")
    if wrk is None:
        return [{"tool": "wrk", "mode": WRK_TARGET, "clients": clients, "note": "wrk is not installed"}]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="connbench-wrk-") as tmp:
        proc = start_target(WRK_TARGET, pg.dsn, port, 1, {}, Path(tmp) / "target.log")
        try:
            if wait_ready(url, proc) is None:
                return [{"tool": "wrk", "mode": WRK_TARGET, "clients": clients, "note": "target failed to start"}]
            cmd = [wrk, "-t", "1", "-c", str(clients), "-d", f"{seconds}s", f"{url}/db"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        finally:
            stop_process(proc, signal.SIGTERM, 20)
    return [{"tool": "wrk", "mode": WRK_TARGET, "clients": clients, "duration_s": seconds, **parse_wrk(out.stdout),
             "note": "" if out.returncode == 0 else out.stderr.strip()[:200]}]  # fmt: skip


def run_baseline(out_csv: Path | None, clients: int = 8, seconds: int = 5, pg: EmbeddedPostgres | None = None) -> list:
    """Run pgbench (and wrk) on a fresh embedded PostgreSQL unless one is given; write baseline.csv."""
    from benchmarks.runner import write_csv_atomic

    if pg is None:
        with EmbeddedPostgres() as own:
            return run_baseline(out_csv, clients, seconds, own)
    rows = pgbench_rows(pg, clients, seconds) + wrk_rows(pg, clients, seconds)
    if out_csv is not None:
        write_csv_atomic(out_csv, BASELINE_COLUMNS, rows)
    return rows
