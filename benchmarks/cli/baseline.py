"""`connbench baseline`: pgbench with and without -C on the World query, wrk where installed."""

from __future__ import annotations

import argparse

from benchmarks.cli.common import Subparsers, add_path_options, count, database, path_options
from benchmarks.errors import ConnbenchError


def register(sub: Subparsers) -> None:
    s = sub.add_parser("baseline", help="pgbench with and without -C on the World query; wrk where installed")
    s.add_argument("--clients", type=count, default=8)
    s.add_argument("--seconds", type=count, default=5)
    add_path_options(s, many=True, pooler=False)
    s.add_argument("--dsn", default=None, help="an existing PostgreSQL instead of the embedded one")
    s.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from benchmarks.run.baseline import run_baseline

    rtts, tls, _ = path_options(args, many=True)
    db = database(args.dsn)
    if db is not None and (rtts or tls):
        raise ConnbenchError("--rtt and --tls apply to the embedded database, not to --dsn")
    rows = run_baseline(None, clients=args.clients, seconds=args.seconds, rtts=rtts or (0,), tls=tls or (False,), db=db)
    for row in rows:
        figures = ", ".join(
            f"{k}={row[k]:.1f}" for k in ("tps", "latency_mean_ms", "connect_ms", "round_trips") if row.get(k)
        )
        where = f"rtt={row.get('rtt_ms', 0)}ms tls={'on' if row.get('tls') else 'off'}"
        print(f"{row['tool']:8} {row['mode']:25} {where} clients={row['clients']} {figures} {row.get('note') or ''}")
    return 0
