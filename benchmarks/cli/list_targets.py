"""`connbench targets`: the targets (strategy x driver) and whether they run here."""

from __future__ import annotations

import argparse

from benchmarks.cli.common import Subparsers


def register(sub: Subparsers) -> None:
    s = sub.add_parser("targets", help="list the targets (strategy x driver) and whether they run here")
    s.set_defaults(func=handle)


def handle(_args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from benchmarks.stack.pgbouncer import choose_targets
    from targets.registry import TARGETS

    table = Table("target", "family", "strategy", "driver", "runnable here", "what it does")
    _, skipped = choose_targets()
    for t in TARGETS.values():
        runnable = f"no: {skipped[t.id]}" if t.id in skipped else "yes"
        table.add_row(t.id, t.family, t.strategy, t.driver, runnable, t.summary)
    Console(width=200).print(table)
    return 0
