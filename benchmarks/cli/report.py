"""`connbench report [RUN_DIR]`: the report notebook executed on a run folder (benchmarks/results/report.py)."""

from __future__ import annotations

import argparse

from benchmarks.cli.common import Subparsers


def register(sub: Subparsers) -> None:
    s = sub.add_parser("report", help="execute the report notebook on a run folder: report.html + figures/*.png")
    s.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR", help="default: the newest under results/")
    s.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from benchmarks.results.report import cmd_report

    code: int = cmd_report(args.run_dir)
    return code
