"""`connbench db`: an embedded PostgreSQL (and PgBouncer) in the foreground, its DSNs printed for the user."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from benchmarks.cli.common import Subparsers, add_path_options, count, parse_set, path_options, port
from benchmarks.errors import ConnbenchError


def register(sub: Subparsers) -> None:
    s = sub.add_parser("db", help="run an embedded PostgreSQL (and PgBouncer) in the foreground")
    s.add_argument("--port", type=port, default=None, help="PostgreSQL port (default: a free one)")
    s.add_argument("--max-connections", type=count, default=100)
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any server setting")
    s.add_argument("--pgbouncer-port", type=port, default=None, help="PgBouncer port (default: a free one)")
    s.add_argument("--pgbouncer-pool", type=count, default=10, help="PgBouncer server pool size")
    add_path_options(s, many=False)
    s.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from benchmarks.stack.network import DEFAULT_POOLER, Network
    from benchmarks.stack.pgbouncer import missing_reason
    from benchmarks.stack.postgres import EmbeddedPostgres

    settings = parse_set(args.set)
    rtts, tls, poolers = path_options(args, many=False)
    reason = missing_reason()
    with (
        EmbeddedPostgres(
            port=args.port, max_connections=args.max_connections, settings=settings, tls=bool(tls and tls[0])
        ) as pg,
        Network(
            pg,
            rtts[0] if rtts else 0,
            () if reason else poolers or (DEFAULT_POOLER,),
            pool_size=args.pgbouncer_pool,
            pgbouncer_port=args.pgbouncer_port,
        ) as net,
    ):
        for name, dsn in net.lines():  # the only place a password is printed: these DSNs are for the user
            print(f"{name}: {dsn}", flush=True)
        if reason:
            print(f"# no pgbouncer: {reason}", flush=True)
        print(net.describe(), flush=True)
        if pg.tls:  # the worker targets verify it: `CONNBENCH_DB_CA=... connbench serve worker-...`
            print(f"# certificate: {pg.tls_files[0]} (the worker targets need it as CONNBENCH_DB_CA)", flush=True)
        _wait_forever(pg.running)
    return 0


def _wait_forever(alive: Callable[[], bool]) -> None:
    print("# Ctrl-C stops", flush=True)
    while alive():
        time.sleep(0.5)
    raise ConnbenchError("PostgreSQL exited unexpectedly")
