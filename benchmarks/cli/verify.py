"""`connbench verify`: check that each target answers /db and shows its connections, then stop."""

from __future__ import annotations

import argparse
import sys

from benchmarks.cli.common import Subparsers, add_service_options, database, split, user_targets


def register(sub: Subparsers) -> None:
    s = sub.add_parser("verify", help="check that each target answers /db and shows its connections, then stop")
    s.add_argument("--targets", default=None, help="comma-separated target ids (default: all runnable)")
    add_service_options(s)
    s.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from benchmarks.run.verify import choose_verified

    db = database(args.dsn)
    targets, skipped = choose_verified(split(args.targets, "--targets"), user_targets(args), db, say=print)
    failed = {t: r for t, r in skipped.items() if r.startswith("verify failed")}
    for t, reason in skipped.items():
        if t not in failed:
            print(f"{t}: skipped: {reason}")
    if failed:
        print(
            f"connbench: error: {len(failed)} of {len(targets) + len(failed)} targets failed verification",
            file=sys.stderr,
        )
    return 1 if failed or not targets else 0
