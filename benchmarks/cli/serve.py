"""`connbench serve TARGET`: one target as a service (benchmarks/stack/serve.py); also the container command."""

from __future__ import annotations

import argparse
import os

from benchmarks.cli.common import Subparsers, count, port


def register(sub: Subparsers) -> None:
    s = sub.add_parser("serve", help="run one target under uvicorn (also the container command)")
    s.add_argument("target", help="a target id (see `connbench targets`)")
    s.add_argument("--port", type=port, default=os.environ.get("CONNBENCH_PORT", "8000"))
    s.add_argument("--host", default=os.environ.get("CONNBENCH_HOST", "127.0.0.1"))
    s.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: $CONNBENCH_DSN)")
    s.add_argument("--workers", type=count, default=os.environ.get("CONNBENCH_WORKERS", "1"))
    s.add_argument("--log-level", default="warning")
    s.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from benchmarks.stack.serve import serve

    serve(args.target, args.dsn, args.host, args.port, args.workers, args.log_level)
    return 0
