"""What the delay relay costs at RTT 0: the same load direct and through the relay (README quotes the figures).

    flock /tmp/connbench-load.lock .venv/bin/python tests/bench_distance.py [--seconds 10]

- pgbench, one client, pooled: mean latency of the World query (one round trip): the relay's own cost per
  round trip is the difference.
- pgbench, 8 clients, pooled: throughput far above any target's, so a cap would show here first.
- pool-eager-asyncpg under wrk (8 connections): the target's requests per second and mean latency.
With `--rtt MS` the relay delays (its other code path) and the figures beyond MS per round trip are its cost.
Not a test (timings never go into assertions); a script to re-measure on another machine.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.run.baseline import parse_wrk, pgbench_rows  # noqa: E402
from benchmarks.stack.distance import Distance  # noqa: E402
from benchmarks.stack.postgres import EmbeddedPostgres  # noqa: E402
from benchmarks.stack.procs import free_port, stop_process  # noqa: E402
from benchmarks.stack.targetproc import start_target, wait_ready  # noqa: E402


def pgbench(dsn: str, clients: int, seconds: int) -> dict:
    row = pgbench_rows(dsn, clients, seconds, {"rtt_ms": 0, "tls": False, "pooler": ""}, throughput=True)[0]
    return {"tps": row["tps"], "latency_ms": row["latency_mean_ms"]}


def wrk(dsn: str, seconds: int) -> dict:
    import subprocess

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="connbench-bench-") as tmp:
        proc = start_target("pool-eager-asyncpg", dsn, port, 1, {}, Path(tmp) / "target.log")
        try:
            assert wait_ready(f"http://127.0.0.1:{port}", proc) is not None, "target did not start"
            cmd = ["wrk", "-t", "1", "-c", "8", "-d", f"{seconds}s", f"http://127.0.0.1:{port}/db"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
        finally:
            stop_process(proc, signal.SIGTERM, 20)
    figures = parse_wrk(out.stdout)
    return {"tps": figures["tps"], "latency_ms": figures["latency_mean_ms"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="alternate direct and relay this many times")
    p.add_argument("--rtt", type=float, default=0, help="the relay's RTT (ms); >0 measures its delaying path")
    args = p.parse_args()
    with EmbeddedPostgres() as pg, Distance(args.rtt, [pg.port]) as relay:
        paths = {"direct": pg.dsn, "relay": pg.dsn_at(relay.port_to(pg.port))}
        loads = {
            "pgbench c=1": lambda d: pgbench(d, 1, args.seconds),
            "pgbench c=8": lambda d: pgbench(d, 8, args.seconds),
        }
        if shutil.which("wrk"):
            loads["pool-eager-asyncpg wrk c=8"] = lambda d: wrk(d, args.seconds)
        for name, load in loads.items():
            results: dict[str, list[dict]] = {"direct": [], "relay": []}
            for _ in range(args.rounds):
                for path, dsn in paths.items():
                    results[path].append(load(dsn))
            best = {k: max(v, key=lambda r: r["tps"] or 0) for k, v in results.items()}
            d, r = best["direct"], best["relay"]
            print(
                f"{name:28} direct {d['tps']:9.0f}/s {d['latency_ms']:.3f} ms   relay {r['tps']:9.0f}/s "
                f"{r['latency_ms']:.3f} ms   throughput {r['tps'] / d['tps']:.0%}, "
                f"+{r['latency_ms'] - d['latency_ms'] - args.rtt:.3f} ms per request beyond the RTT",
                flush=True,
            )


if __name__ == "__main__":
    main()
