"""`connbench build [FAMILY...]`: build the target families that need it (Node: npm ci, generate, bundle)."""

from __future__ import annotations

import argparse

from benchmarks.cli.common import Subparsers
from benchmarks.errors import ConnbenchError
from targets import families


def register(sub: Subparsers) -> None:
    s = sub.add_parser("build", help="build the target families that need it (Node: npm ci, generate, bundle)")
    s.add_argument("families", nargs="*", metavar="FAMILY", help=f"default: all ({', '.join(families.FAMILIES)})")
    s.add_argument("--force", action="store_true", help="rebuild even when the cached build matches")
    s.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    unknown = [f for f in args.families if f not in families.FAMILIES]
    if unknown:
        raise ConnbenchError(f"unknown family {unknown[0]!r}; families to build: {', '.join(families.FAMILIES)}")
    return families.build_all(args.families, force=args.force)
