"""`connbench advise`: which connection strategy, pool size and pooler placement for a deployment, from a run.

The advice itself: benchmarks/results/advice.py (and the model it reads, benchmarks/results/model.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from benchmarks.cli.common import Subparsers
from benchmarks.errors import ConnbenchError
from benchmarks.results.advice import RUNTIMES, Advice, Deployment, advise, default_run

MACHINE_CORES = " (the run machine's; --cores gives yours)"


def register(sub: Subparsers) -> None:
    s = sub.add_parser(
        "advise",
        help="advise a connection strategy, pool size and pooler placement for a deployment, from a run's model",
    )
    # Numbers are read as text and checked in handle(), so a bad one is one line and exit 1, as other user errors.
    s.add_argument("--replicas", default="1", metavar="N", help="replicas (machines or containers); default 1")
    s.add_argument("--workers", default="1", metavar="N", help="worker processes per replica; default 1")
    s.add_argument(
        "--runtime", default="long-running", choices=RUNTIMES,
        help="long-running processes, serverless functions (one request per instance), or edge isolates",
    )  # fmt: skip
    s.add_argument("--max-connections", default="100", metavar="N", help="PostgreSQL's max_connections; default 100")
    s.add_argument("--reserved", default="3", metavar="N",
                   help="connections kept for others (superusers, migrations, other services); default 3")  # fmt: skip
    s.add_argument("--rtt", default="0", metavar="MS", help="round-trip time from the app to the database, ms")
    s.add_argument("--tls", action=argparse.BooleanOptionalAction, default=False, help="TLS to the database")
    s.add_argument("--rate", default="100", metavar="RPS", help="peak requests per second, all replicas; default 100")
    s.add_argument("--p99", default=None, metavar="MS", help="the p99 latency SLO, ms (default: none)")
    s.add_argument("--cores", default=None, metavar="N",
                   help="cores for Prisma's and HikariCP's pool formulas (default: the run machine's)")  # fmt: skip
    s.add_argument(
        "--run", default=None, metavar="DIR",
        help="the run folder (default: the newest complete one under results/, else results/reference)",
    )  # fmt: skip
    s.add_argument("--json", action="store_true", help="print the advice as JSON")
    s.set_defaults(func=handle)


def _number(option: str, text: str | None, *, whole: bool = False, minimum: float = 0.0) -> Any:
    """A command-line number, or ConnbenchError (one line) naming the option."""
    if text is None:
        return None
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ConnbenchError(f"{option} {text!r} is not {kind}") from None
    if not math.isfinite(value) or value < minimum:
        raise ConnbenchError(f"{option} {text!r} must be at least {minimum:g}")
    return value


def deployment(args: argparse.Namespace) -> Deployment:
    d = Deployment(
        replicas=_number("--replicas", args.replicas, whole=True, minimum=1),
        workers=_number("--workers", args.workers, whole=True, minimum=1),
        runtime=args.runtime,
        max_connections=_number("--max-connections", args.max_connections, whole=True, minimum=1),
        reserved=_number("--reserved", args.reserved, whole=True),
        rtt_ms=_number("--rtt", args.rtt),
        tls=bool(args.tls),
        rate=_number("--rate", args.rate, minimum=0.001),
        p99_ms=_number("--p99", args.p99, minimum=0.001),
        cores=_number("--cores", args.cores, whole=True, minimum=1),
    )
    if d.reserved >= d.max_connections:
        raise ConnbenchError(f"--reserved {d.reserved} leaves none of --max-connections {d.max_connections}")
    return d


# -- output --------------------------------------------------------------------------------------------
def _fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def print_advice(a: Advice, console: Any) -> None:
    from rich.table import Table

    d = a.deployment
    where = f"{d.replicas} replicas × {d.workers} workers" if d.runtime == "long-running" else d.runtime
    console.print(f"Deployment: {where}, {d.rate:g} req/s at peak, RTT {d.rtt_ms:g} ms, "
                  f"{'TLS' if d.tls else 'no TLS'}, max_connections {d.max_connections} − {d.reserved} reserved"
                  + (f", p99 SLO {d.p99_ms:g} ms" if d.p99_ms is not None else ""))  # fmt: skip
    table = Table(show_lines=False)
    for col in ("strategy", "pooler", "fits", "p50 ms", "p99 ms", "connections", "db cores", "pool_max", "why"):
        table.add_column(col, overflow="fold")
    for r in a.rows:
        conns = None if r.connections is None else float(math.ceil(r.connections))
        table.add_row(r.target, r.pooler, r.feasible, _fmt(r.p50_ms), _fmt(r.p99_ms), _fmt(conns, 0),
                      _fmt(r.db_cores, 2), "—" if r.pool_max is None else str(r.pool_max),
                      "; ".join(r.reasons + r.notes))  # fmt: skip
    console.print(table)
    if a.pool:
        p = a.pool
        need = (
            f"{p.note}" if p.pool_max is None
            else f"pool_max {p.pool_max} keeps the p99 wait for a connection within "
            + ("the SLO" if d.p99_ms is not None else "one hold time")
        )  # fmt: skip
        console.print(
            f"Pool size ({p.target}): {p.rate_per_process:.1f} req/s per process, each holding its connection "
            f"{p.hold_ms:.2f} ms at {d.rtt_ms:g} ms RTT: {need} (Little's law, M/M/c). With {p.cores} cores"
            f"{'' if d.cores else MACHINE_CORES}, "
            f"Prisma's default (cores × 2 + 1) is {p.prisma}, HikariCP's (cores × 2 + spindles, 0 for a cached "
            f"table) {p.hikari}; closer to the need: {p.closer}. {p.evidence}; a process served at most "
            f"{p.unconstrained_rps:,.0f} req/s (this machine's throughput)."
        )  # fmt: skip
    if d.runtime != "long-running":
        console.print(f"Pool size: one request at a time per {d.runtime} instance, so pool_max 1; the instances "
                      "(rate × p50, Little's law) multiply the connections.")  # fmt: skip
    console.print(f"Recommendation: {a.recommendation}")
    for line in a.notes:
        console.print(line)


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    d = deployment(args)
    run_dir = Path(args.run) if args.run else default_run()
    result = advise(run_dir, d)
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print_advice(result, Console() if sys.stdout.isatty() else Console(width=160))
    return 0
