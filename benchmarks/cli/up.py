"""`connbench up`: the whole stack as local processes plus the Locust web UI (benchmarks/run/up.py)."""

from __future__ import annotations

import argparse

from benchmarks.cli.common import (
    Subparsers,
    add_path_options,
    add_service_options,
    count,
    path_options,
    port,
    split,
    user_targets,
)


def register(sub: Subparsers) -> None:
    s = sub.add_parser("up", help="the whole stack as local processes plus the Locust web UI (Ctrl-C stops)")
    s.add_argument("--web-port", type=port, default=8089, help="Locust web UI port on 127.0.0.1")
    s.add_argument("--targets", default=None, help="comma-separated target ids (default: all runnable)")
    s.add_argument("--max-connections", type=count, default=100, help="PostgreSQL max_connections")
    s.add_argument(
        "--load-workers", type=int, default=0, help="run Locust as a master with N local workers (default: 0)"
    )
    s.add_argument("--locustfile", default=None, help="default: benchmarks/load/locustfile.py")
    add_path_options(s, many=False)
    add_service_options(s)
    s.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from benchmarks.run.up import run_up

    return run_up(
        split(args.targets, "--targets"),
        args.web_port,
        args.max_connections,
        args.load_workers,
        args.locustfile,
        path_options(args, False),
        dsn=args.dsn,
        user_targets=user_targets(args),
    )
