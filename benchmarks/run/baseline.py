"""`connbench baseline`: the database's own ceiling and the raw price of a connection.

pgbench runs the World point query of the targets with and without `-C` (a new connection per transaction),
same clients, so the report can show how far each target is from what PostgreSQL itself serves. Where wrk is
installed it also measures the HTTP ceiling of pool-eager-asyncpg /db, for comparison with what Locust reached.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from benchmarks.load.sampler import tree_usage
from benchmarks.results.summary import BASELINE_COLUMNS
from benchmarks.stack.postgres import EmbeddedPostgres, find_bindir, libpq_env
from benchmarks.stack.procs import free_port, stop_process

WORLD_SCRIPT = "\\set id random(1, 10000)\nSELECT id, randomnumber FROM world WHERE id = :id;\n"
WRK_TARGET = "pool-eager-asyncpg"
SECONDS = {"smoke": 1, "quick": 3}  # per pgbench/wrk run, within the profile's time goal; others: 5


def seconds_for(profile: str) -> int:
    return SECONDS.get(profile, 5)


def parse_pgbench(text: str) -> dict[str, float | None]:
    """tps, mean latency and (with -C) mean connection time from pgbench's report."""

    def grab(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    return {
        "tps": grab(r"tps = ([\d.]+)"),
        "latency_mean_ms": grab(r"latency average = ([\d.]+) ms"),
        "connect_ms": grab(r"average connection time = ([\d.]+) ms"),
        "transactions": grab(r"number of transactions actually processed: (\d+)"),
    }


def db_cpu_s(pid: int | None) -> float | None:
    """PostgreSQL's CPU seconds so far: the postmaster, its backends, and those that have ended."""
    if pid is None:
        return None
    try:
        return tree_usage(psutil.Process(pid), reaped=True)[1]
    except psutil.Error:
        return None


def parse_wrk(text: str) -> dict[str, float | None]:
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)\b", text)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "tps": float(m.group(1)) if m else None,
        "latency_mean_ms": float(lat.group(1)) * scale[lat.group(2)] if lat else None,
    }


def pgbench_rows(
    dsn: str, clients: int, seconds: int, path: dict[str, Any], throughput: bool = True, pg_pid: int | None = None
) -> list[dict[str, Any]]:
    """pooled and connect-per-transaction throughput with `clients` (when `throughput`), and `connect`: one
    client, a new connection per transaction, whose connect time has no other connection's CPU in it.
    `pg_pid`: the postmaster of a PostgreSQL connbench started, whose CPU per transaction each row gets."""
    pgbench = find_bindir() / "pgbench"
    env = {**os.environ, **libpq_env(dsn)}  # the password stays out of the process list
    rows = []
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
        fh.write(WORLD_SCRIPT)
        script = fh.name
    runs = [("pooled", clients, ["-T", str(seconds)]), ("connect-per-transaction", clients, ["-T", str(seconds), "-C"])]
    connects = 20 if path["rtt_ms"] <= 10 else 10
    runs = (runs if throughput else []) + [("connect", 1, ["-t", str(connects), "-C"])]
    try:
        for mode, n, extra in runs:
            cmd = [str(pgbench), "-n", "-f", script, "-c", str(n), "-j", str(min(n, 2)), *extra]
            cpu_before = db_cpu_s(pg_pid)
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, env=env)
            cpu_after = db_cpu_s(pg_pid)
            figures = parse_pgbench(out.stdout)
            done = figures.pop("transactions")
            if cpu_before is not None and cpu_after is not None and done:
                figures["db_cpu_ms_per_tx"] = round((cpu_after - cpu_before) * 1000 / done, 4)
            note = "" if out.returncode == 0 else (out.stderr.strip().splitlines() or ["pgbench failed"])[-1]
            duration = seconds if "-T" in extra else None
            rows.append({"tool": "pgbench", "mode": mode, **path, "clients": n, "duration_s": duration, **figures,
                         "note": note})  # fmt: skip
    finally:
        Path(script).unlink(missing_ok=True)
    return rows


def add_round_trips(rows: list[dict[str, Any]]) -> None:
    """Round trips per new connection: the slope of the `connect` rows' connect time against RTT, per TLS mode
    (needs two RTTs or more); every `connect` row of that mode gets it."""
    import statistics

    for tls in {r["tls"] for r in rows if r["mode"] == "connect"}:
        group = [r for r in rows if r["mode"] == "connect" and r["tls"] == tls and r.get("connect_ms") is not None]
        if len({r["rtt_ms"] for r in group}) < 2:
            continue
        fit = statistics.linear_regression([float(r["rtt_ms"]) for r in group], [r["connect_ms"] for r in group])
        for r in group:
            r["round_trips"] = round(fit.slope, 2)


def wrk_rows(pg: EmbeddedPostgres, clients: int, seconds: int, path: dict[str, Any]) -> list[dict[str, Any]]:
    from benchmarks.stack.targetproc import start_target, wait_ready

    wrk = shutil.which("wrk")
    if wrk is None:
        return [{"tool": "wrk", "mode": WRK_TARGET, **path, "clients": clients, "note": "wrk is not installed"}]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="connbench-wrk-") as tmp:
        proc = start_target(WRK_TARGET, pg.dsn, port, 1, {}, Path(tmp) / "target.log")
        try:
            if wait_ready(url, proc) is None:
                return [{"tool": "wrk", "mode": WRK_TARGET, **path, "clients": clients,
                         "note": "target failed to start"}]  # fmt: skip
            cmd = [wrk, "-t", "1", "-c", str(clients), "-d", f"{seconds}s", f"{url}/db"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        finally:
            stop_process(proc, signal.SIGTERM, 20)
    return [{"tool": "wrk", "mode": WRK_TARGET, **path, "clients": clients, "duration_s": seconds,
             **parse_wrk(out.stdout),
             "note": "" if out.returncode == 0 else out.stderr.strip()[:200]}]  # fmt: skip


def run_baseline(
    out_csv: Path | None,
    clients: int = 8,
    seconds: int = 5,
    rtts: Sequence[float] = (0,),
    tls: Sequence[bool] = (False,),
    db: Any = None,
) -> list:
    """Run pgbench (and wrk) on fresh embedded PostgreSQL servers, one per TLS mode, across each RTT; write
    baseline.csv. Throughput rows on the first path only (smallest RTT, first TLS mode), connect rows on every
    path. `db`: an existing database (--dsn, benchmarks/stack/external.py) instead, as it is (no RTT, no TLS of
    connbench's)."""
    from benchmarks.results.runfolder import write_csv_atomic
    from benchmarks.stack.network import Network

    rows = []
    if db is not None:
        path = {"rtt_ms": 0, "tls": False, "pooler": ""}
        rows += pgbench_rows(db.dsn, clients, seconds, path, throughput=True) + wrk_rows(db, clients, seconds, path)
        tls = ()
    for tls_on in tls:
        with EmbeddedPostgres(tls=tls_on) as pg:
            for rtt in rtts:
                path = {"rtt_ms": rtt, "tls": tls_on, "pooler": ""}
                with Network(pg, rtt) as net:
                    first = rtt == min(rtts) and tls_on == tls[0]  # throughput on the first path only
                    rows += pgbench_rows(net.dsn(), clients, seconds, path, throughput=first, pg_pid=pg.pid)
            if tls_on == tls[0]:
                rows += wrk_rows(pg, clients, seconds, {"rtt_ms": 0, "tls": tls_on, "pooler": ""})
    add_round_trips(rows)
    if out_csv is not None:
        write_csv_atomic(out_csv, BASELINE_COLUMNS, rows)
    return rows
