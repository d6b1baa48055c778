"""`connbench`: the one entry point. Each sub-command has --help; user errors print one line and exit 1."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

from benchmarks.errors import ConnbenchError
from targets.strategies import TARGETS, UnknownTarget, get_target


def _raise_interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _parse_set(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConnbenchError(f"--set expects name=value, got {item!r}")
        out[name] = value
    return out


# -- targets -------------------------------------------------------------------------------------------
def cmd_targets(_args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from benchmarks.pgbouncer import choose_targets

    table = Table("target", "strategy", "driver", "runnable here", "what it does")
    _, skipped = choose_targets()
    for t in TARGETS.values():
        runnable = f"no: {skipped[t.id]}" if t.id in skipped else "yes"
        table.add_row(t.id, t.strategy, t.driver, runnable, t.summary)
    Console(width=200).print(table)
    return 0


# -- db ------------------------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    from benchmarks.pgbouncer import PgBouncer, missing_reason
    from benchmarks.postgres import EmbeddedPostgres

    settings = _parse_set(args.set)
    with EmbeddedPostgres(port=args.port, max_connections=args.max_connections, settings=settings) as pg:
        print(f"postgres: {pg.dsn}", flush=True)
        reason = missing_reason()
        if reason:
            print(f"# no pgbouncer: {reason}", flush=True)
            _wait_forever(pg.running)
        else:
            with PgBouncer(pg.port, port=args.pgbouncer_port, pool_size=args.pgbouncer_pool) as bouncer:
                print(f"pgbouncer: {bouncer.dsn}", flush=True)
                _wait_forever(pg.running)
    return 0


def _wait_forever(alive: Callable[[], bool]) -> None:
    print("# Ctrl-C stops", flush=True)
    while alive():
        time.sleep(0.5)
    raise ConnbenchError("PostgreSQL exited unexpectedly")


# -- serve ---------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import psycopg
    import uvicorn

    from benchmarks.procs import check_port_free
    from targets.app import DEFAULT_DSN

    target = get_target(args.target)
    dsn = args.dsn or os.environ.get("CONNBENCH_DSN") or DEFAULT_DSN
    if args.host in ("127.0.0.1", "localhost"):
        check_port_free(args.port, f"target {target.id}")
    try:
        with psycopg.connect(dsn, connect_timeout=3, application_name="connbench:probe"):
            pass
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConnbenchError(f"cannot reach PostgreSQL at {dsn}: {first}") from None
    os.environ["CONNBENCH_TARGET"] = target.id
    os.environ["CONNBENCH_DSN"] = dsn
    # uvicorn re-raises the SIGTERM it handled once it has shut down; a no-op handler makes that exit 0.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    uvicorn.run(
        "targets.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return 0


# -- run / baseline ------------------------------------------------------------------------------------
def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.runner import run_matrix

    out = run_matrix(
        profile=args.profile,
        target_names=_split(args.targets),
        scenario_names=_split(args.scenarios),
        out=Path(args.out) if args.out else None,
        resume=Path(args.resume) if args.resume else None,
        baseline=not args.no_baseline,
        load_workers=args.load_workers,
    )
    print(f"results: {out}", flush=True)
    if not args.no_report:
        from benchmarks.report import build_report

        for path in build_report(out):
            print(f"report: {path}", flush=True)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from benchmarks.baseline import run_baseline

    for row in run_baseline(None, clients=args.clients, seconds=args.seconds):
        figures = ", ".join(f"{k}={row[k]:.1f}" for k in ("tps", "latency_mean_ms", "connect_ms") if row.get(k))
        print(f"{row['tool']:8} {row['mode']:25} clients={row['clients']} {figures} {row.get('note') or ''}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.report import cmd_report as report

    return report(args.run_dir)


# -- main ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="connbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("targets", help="list the targets (strategy x driver) and whether they run here")
    s.set_defaults(func=cmd_targets)

    s = sub.add_parser("db", help="run an embedded PostgreSQL (and PgBouncer) in the foreground")
    s.add_argument("--port", type=int, default=None, help="PostgreSQL port (default: a free one)")
    s.add_argument("--max-connections", type=int, default=100)
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any server setting")
    s.add_argument("--pgbouncer-port", type=int, default=None, help="PgBouncer port (default: a free one)")
    s.add_argument("--pgbouncer-pool", type=int, default=10, help="PgBouncer server pool size")
    s.set_defaults(func=cmd_db)

    s = sub.add_parser("serve", help="run one target under uvicorn (also the container command)")
    s.add_argument("target", help="a target id (see `connbench targets`)")
    s.add_argument("--port", type=int, default=int(os.environ.get("CONNBENCH_PORT", 8000)))
    s.add_argument("--host", default=os.environ.get("CONNBENCH_HOST", "127.0.0.1"))
    s.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: $CONNBENCH_DSN)")
    s.add_argument("--workers", type=int, default=int(os.environ.get("CONNBENCH_WORKERS", 1)))
    s.add_argument("--log-level", default="warning")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("run", help="run the benchmark matrix on the embedded stack, then the report")
    s.add_argument("--profile", default="quick", help="smoke | quick | full (default: quick)")
    s.add_argument("--targets", default=None, help="comma-separated target ids (default: all runnable)")
    s.add_argument("--scenarios", default=None, help="comma-separated scenario names (default: the profile's)")
    s.add_argument("--out", default=None, help="the run folder (default: results/<UTC time>-<profile>)")
    s.add_argument("--resume", default=None, metavar="DIR", help="finish an interrupted run in DIR")
    s.add_argument("--no-baseline", action="store_true", help="skip pgbench/wrk")
    s.add_argument("--no-report", action="store_true", help="do not build the report afterwards")
    s.add_argument("--load-workers", type=int, default=1, help="Locust worker processes (its --processes)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("baseline", help="pgbench with and without -C on the World query; wrk where installed")
    s.add_argument("--clients", type=int, default=8)
    s.add_argument("--seconds", type=int, default=5)
    s.set_defaults(func=cmd_baseline)

    s = sub.add_parser("report", help="execute the report notebook on a run folder: report.html + figures/*.png")
    s.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR", help="default: the newest under results/")
    s.set_defaults(func=cmd_report)

    for register in _extra_commands:
        register(sub)
    return p


_extra_commands: list[Callable[[argparse._SubParsersAction], None]] = []


# -- up ------------------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from benchmarks.stack import run_up

    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    return run_up(targets, args.web_port, args.max_connections, args.load_workers, args.locustfile)


def _add_up(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("up", help="the whole stack as local processes plus the Locust web UI (Ctrl-C stops)")
    s.add_argument("--web-port", type=int, default=8089, help="Locust web UI port on 127.0.0.1")
    s.add_argument("--targets", default=None, help="comma-separated target ids (default: all runnable)")
    s.add_argument("--max-connections", type=int, default=100, help="PostgreSQL max_connections")
    s.add_argument(
        "--load-workers", type=int, default=0, help="run Locust as a master with N local workers (default: 0)"
    )
    s.add_argument("--locustfile", default=None, help="default: benchmarks/locustfile.py")
    s.set_defaults(func=cmd_up)


_extra_commands.append(_add_up)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # uvicorn handles SIGTERM itself
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.func(args)
    except (ConnbenchError, UnknownTarget) as exc:
        print(f"connbench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("connbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
