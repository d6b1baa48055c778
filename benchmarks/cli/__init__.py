"""`connbench`: the one entry point. Each sub-command has --help; user errors print one line and exit 1."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from benchmarks.cli import (
    advise,
    baseline,
    build,
    compare,
    db,
    list_targets,
    load_worker,
    report,
    run,
    serve,
    up,
    verify,
)
from benchmarks.cli.common import Parser
from benchmarks.errors import ConnbenchError
from targets.registry import UnknownTarget

# In the order `connbench --help` lists them; each module registers its sub-parser and handler.
COMMANDS = (list_targets, db, serve, run, baseline, report, compare, up, verify, advise, load_worker, build)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="connbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return p


def _raise_interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # uvicorn handles SIGTERM itself
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code: int = args.func(args)
    except (ConnbenchError, UnknownTarget) as exc:
        print(f"connbench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("connbench: interrupted", file=sys.stderr)
        return 130
    return code
