"""`connbench run`: the benchmark matrix on the embedded stack (benchmarks/run/runner.py), then the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.cli.common import (
    Subparsers,
    add_path_options,
    add_service_options,
    host_port,
    load_workers,
    path_options,
    split,
    user_targets,
)
from benchmarks.errors import ConnbenchError
from benchmarks.run.options import RunOptions

BREACH_EXIT = 99  # a --threshold (run) or a --fail-on limit (compare) breached: k6's exit code


def register(sub: Subparsers) -> None:
    s = sub.add_parser("run", help="run the benchmark matrix on the embedded stack, then the report")
    s.add_argument("--profile", default="quick", help="smoke | quick | full (default: quick)")
    s.add_argument("--targets", default=None, help="comma-separated target ids (default: all runnable)")
    s.add_argument("--scenarios", default=None, help="comma-separated scenario names (default: the profile's)")
    s.add_argument("--out", default=None, help="the run folder (default: results/<UTC time>-<profile>)")
    s.add_argument("--resume", default=None, metavar="DIR", help="finish an interrupted run in DIR")
    s.add_argument("--no-baseline", action="store_true", help="skip pgbench/wrk")
    s.add_argument("--no-report", action="store_true", help="do not build the report afterwards")
    s.add_argument("--plan", action="store_true", help="print the cells and their planned duration, run nothing")
    s.add_argument("--load-workers", type=load_workers, default=1, help="Locust processes (its --processes), or auto")
    s.add_argument(
        "--threshold", action="append", type=threshold, default=[], metavar="EXPR",
        help="what must hold in every valid cell, e.g. 'latency_p99_ms<50' (repeatable); "
        f"a breach makes the run exit {BREACH_EXIT} once everything is written",
    )  # fmt: skip
    add_path_options(s, many=True)
    add_service_options(s)
    s.add_argument(
        "--load-master", type=host_port, default=None, metavar="HOST:PORT",
        help="Locust's master listens here for --load-workers N `connbench load-worker`s on other machines",
    )  # fmt: skip
    s.set_defaults(func=handle, parser=s)


def threshold(value: str) -> str:
    """A --threshold, checked before anything runs (benchmarks/run/thresholds.py)."""
    from benchmarks.run.thresholds import parse_threshold

    try:
        return str(parse_threshold(value))
    except ConnbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_options(args: argparse.Namespace) -> RunOptions:
    """The command line as the run's options."""
    targets = split(args.targets, "--targets")
    scenarios = split(args.scenarios, "--scenarios")
    return RunOptions(
        profile=args.profile,
        targets=tuple(targets) if targets is not None else None,
        scenarios=tuple(scenarios) if scenarios is not None else None,
        out=Path(args.out) if args.out else None,
        resume=Path(args.resume) if args.resume else None,
        baseline=not args.no_baseline,
        load_workers=args.load_workers,
        path=path_options(args, many=True),
        user_targets=tuple(user_targets(args)),
        dsn=args.dsn,
        load_master=args.load_master or "",
        thresholds=tuple(args.threshold),
    )


def _resume_conflicts(args: argparse.Namespace) -> list[str]:
    """The options given beside --resume: a resumed run takes every setting from its manifest."""
    ignored = {"resume", "no_report", "help", "func", "command", "parser", "dsn"}
    return [
        a.option_strings[0]
        for a in args.parser._actions
        if a.dest not in ignored and a.option_strings and getattr(args, a.dest, a.default) != a.default
    ]


def handle(args: argparse.Namespace) -> int:
    from benchmarks.run.runner import describe_plan, run_matrix

    if args.plan:
        for line in describe_plan(run_options(args)):
            print(line)
        return 0
    if args.resume:
        from benchmarks.results.runfolder import read_manifest

        read_manifest(Path(args.resume))  # not a run folder: say that first
    if args.resume and _resume_conflicts(args):
        raise ConnbenchError(
            f"--resume takes every setting from {args.resume}/manifest.json; drop " + ", ".join(_resume_conflicts(args))
        )
    out = run_matrix(run_options(args))
    print(f"results: {out}", flush=True)
    if not args.no_report:
        from benchmarks.results.report import build_report

        for path in build_report(out):
            print(f"report: {path}", flush=True)
    return _threshold_exit(out)


def _threshold_exit(out: Path) -> int:
    """BREACH_EXIT with one line per breach on stderr when a cell breached a threshold, else 0."""
    from benchmarks.results.runfolder import read_manifest
    from benchmarks.run.thresholds import breach_lines, unchecked_lines

    results = read_manifest(out).get("thresholds") or []
    for line in unchecked_lines(results) + breach_lines(results):
        print(f"connbench: {line}", file=sys.stderr, flush=True)
    return BREACH_EXIT if breach_lines(results) else 0
