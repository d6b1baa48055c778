"""`connbench compare OLD NEW`: two run folders, per cell and answer, beyond noise or not.

The comparison itself: benchmarks/results/compare.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.cli.common import Subparsers
from benchmarks.cli.run import BREACH_EXIT
from benchmarks.errors import ConnbenchError


def register(sub: Subparsers) -> None:
    s = sub.add_parser(
        "compare", help="compare two run folders: old, new, ratio and beyond noise or not, per cell and answer"
    )
    s.add_argument("old", metavar="OLD", help="the run folder to compare against (e.g. the main branch's last run)")
    s.add_argument("new", metavar="NEW", help="the run folder being judged")
    out = s.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="print markdown (a CI job summary, a PR comment)")
    out.add_argument("--json", action="store_true", help="print the comparison as JSON")
    s.add_argument(
        "--fail-on", action="append", type=limit, default=[], metavar="EXPR",
        help="a change that fails the comparison, e.g. 'rps<-10%%' or 'latency_p99_ms>+20%%' (repeatable); "
        f"a cell's change within noise never does; exit {BREACH_EXIT}, one line per breach",
    )  # fmt: skip
    s.add_argument(
        "--min-change", type=percent, default=None, metavar="PCT",
        help="the smallest change called beyond noise, in %% of the old value (default 10, as asv compare)",
    )  # fmt: skip
    s.set_defaults(func=handle)


def limit(value: str) -> object:
    """A --fail-on expression, checked before anything is read."""
    from benchmarks.results.compare import parse_limit

    try:
        return parse_limit(value)
    except ConnbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def percent(value: str) -> float:
    try:
        pct = float(value.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a percentage") from None
    if not 0 <= pct < 1000:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 0 and 1000")
    return pct / 100


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from benchmarks.results.compare import MIN_CHANGE, compare, markdown, print_table

    floor = MIN_CHANGE if args.min_change is None else args.min_change
    result = compare(Path(args.old), Path(args.new), args.fail_on, floor)
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    elif args.markdown:
        print(markdown(result), end="")
    else:
        print_table(result, Console() if sys.stdout.isatty() else Console(width=160))
    for line in result.breaches:
        print(f"connbench: {line}", file=sys.stderr, flush=True)
    return BREACH_EXIT if result.breaches else 0
