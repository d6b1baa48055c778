"""`connbench`: the one entry point. Each sub-command has --help; user errors print one line and exit 1."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from benchmarks.errors import ConnbenchError
from targets import families
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

    from benchmarks.stack.pgbouncer import choose_targets

    table = Table("target", "family", "strategy", "driver", "runnable here", "what it does")
    _, skipped = choose_targets()
    for t in TARGETS.values():
        runnable = f"no: {skipped[t.id]}" if t.id in skipped else "yes"
        table.add_row(t.id, t.family, t.strategy, t.driver, runnable, t.summary)
    Console(width=200).print(table)
    return 0


# -- db ------------------------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    from benchmarks.stack.network import DEFAULT_POOLER, Network
    from benchmarks.stack.pgbouncer import missing_reason
    from benchmarks.stack.postgres import EmbeddedPostgres

    settings = _parse_set(args.set)
    rtts, tls, poolers = _path_options(args, many=False)
    reason = missing_reason()
    with (
        EmbeddedPostgres(
            port=args.port, max_connections=args.max_connections, settings=settings, tls=bool(tls and tls[0])
        ) as pg,
        Network(
            pg,
            rtts[0] if rtts else 0,
            () if reason else poolers or (DEFAULT_POOLER,),
            pool_size=args.pgbouncer_pool,
            pgbouncer_port=args.pgbouncer_port,
        ) as net,
    ):
        for name, dsn in net.lines():  # the only place a password is printed: these DSNs are for the user
            print(f"{name}: {dsn}", flush=True)
        if reason:
            print(f"# no pgbouncer: {reason}", flush=True)
        print(net.describe(), flush=True)
        if pg.tls:  # the worker targets verify it: `CONNBENCH_DB_CA=... connbench serve worker-...`
            print(f"# certificate: {pg.tls_files[0]} (the worker targets need it as CONNBENCH_DB_CA)", flush=True)
        _wait_forever(pg.running)
    return 0


def _add_path_options(s: argparse.ArgumentParser, many: bool, pooler: bool = True) -> None:
    """--rtt, --tls and --pooler: the connection path between the targets and the database side."""
    each = " (comma-separated: the cells run once per value)" if many else ""
    s.add_argument(
        "--rtt", default=None, metavar="MS[,MS...]" if many else "MS",
        help="network distance to the database side in ms of round-trip time, TCP handshake included; "
        "0 = loopback" + each,
    )  # fmt: skip
    s.add_argument(
        "--tls", nargs="?", const="on", default=None, metavar="on|off" + ("|on,off" if many else ""),
        help="PostgreSQL and PgBouncer with TLS (a throw-away certificate), DSNs with sslmode=require" + each,
    )  # fmt: skip
    if not pooler:
        return
    s.add_argument(
        "--pooler", default=None, metavar="near-db|near-app",
        help="where PgBouncer sits: next to PostgreSQL (near-db, default) or next to the app (near-app)"
        + (" (both: comma-separated)" if many else ""),
    )  # fmt: skip


def _path_options(
    args: argparse.Namespace, many: bool
) -> tuple[tuple[float, ...] | None, tuple[bool, ...] | None, tuple[str, ...] | None]:
    """(rtts, tls modes, poolers) given on the command line, None for each one not given."""
    from benchmarks.stack.network import parse_poolers, parse_rtts, parse_tls

    rtts = parse_rtts(args.rtt) if args.rtt is not None else None
    tls = parse_tls(args.tls) if args.tls is not None else None
    poolers = parse_poolers(args.pooler) if getattr(args, "pooler", None) is not None else None
    if not many:
        for option, values in (("--rtt", rtts), ("--tls", tls)):
            if values and len(values) > 1:
                raise ConnbenchError(f"{option} takes one value for `connbench {args.command}`")
    return rtts, tls, poolers


def _wait_forever(alive: Callable[[], bool]) -> None:
    print("# Ctrl-C stops", flush=True)
    while alive():
        time.sleep(0.5)
    raise ConnbenchError("PostgreSQL exited unexpectedly")


# -- serve ---------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import psycopg
    import uvicorn

    from benchmarks.stack.procs import check_port_free
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
        from benchmarks.stack.postgres import redact

        raise ConnbenchError(f"cannot reach PostgreSQL at {redact(dsn)}: {first}") from None
    if target.family in families.FAMILIES:  # the family's own command replaces this process
        try:
            families.serve(families.target(target.id), dsn, args.host, args.port, args.workers)
        except ValueError as exc:
            raise ConnbenchError(str(exc)) from None
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
def _split(value: str | None, option: str = "the option") -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConnbenchError(f"{option} names nothing: {value!r}")
    return items


def _resume_conflicts(args: argparse.Namespace) -> list[str]:
    """The options given beside --resume: a resumed run takes every setting from its manifest."""
    ignored = {"resume", "no_report", "help", "func", "command", "parser", "dsn"}
    return [
        a.option_strings[0]
        for a in args.parser._actions
        if a.dest not in ignored and a.option_strings and getattr(args, a.dest, a.default) != a.default
    ]


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.run.runner import run_matrix

    if args.plan:
        from benchmarks.run.runner import describe_plan

        for line in describe_plan(
            args.profile, _split(args.targets, "--targets"), _split(args.scenarios, "--scenarios")
        ):
            print(line)
        return 0
    if args.resume:
        from benchmarks.results.runfolder import read_manifest

        read_manifest(Path(args.resume))  # not a run folder: say that first
    if args.resume and _resume_conflicts(args):
        raise ConnbenchError(
            f"--resume takes every setting from {args.resume}/manifest.json; drop " + ", ".join(_resume_conflicts(args))
        )
    out = run_matrix(
        profile=args.profile,
        target_names=_split(args.targets, "--targets"),
        scenario_names=_split(args.scenarios, "--scenarios"),
        out=Path(args.out) if args.out else None,
        resume=Path(args.resume) if args.resume else None,
        baseline=not args.no_baseline,
        load_workers=args.load_workers,
        path=_path_options(args, many=True),
        user_targets=_user_targets(args),
        dsn=args.dsn,
        load_master=args.load_master or "",
    )
    print(f"results: {out}", flush=True)
    if not args.no_report:
        from benchmarks.results.report import build_report

        for path in build_report(out):
            print(f"report: {path}", flush=True)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from benchmarks.run.baseline import run_baseline

    rtts, tls, _ = _path_options(args, many=True)
    db = _database(args.dsn)
    if db is not None and (rtts or tls):
        raise ConnbenchError("--rtt and --tls apply to the embedded database, not to --dsn")
    rows = run_baseline(None, clients=args.clients, seconds=args.seconds, rtts=rtts or (0,), tls=tls or (False,), db=db)
    for row in rows:
        figures = ", ".join(
            f"{k}={row[k]:.1f}" for k in ("tps", "latency_mean_ms", "connect_ms", "round_trips") if row.get(k)
        )
        where = f"rtt={row.get('rtt_ms', 0)}ms tls={'on' if row.get('tls') else 'off'}"
        print(f"{row['tool']:8} {row['mode']:25} {where} clients={row['clients']} {figures} {row.get('note') or ''}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.results.report import cmd_report as report

    return report(args.run_dir)


# -- main ----------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse with the suite's one-line errors (the usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _port(value: str) -> int:
    port = _count(value)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1-65535)")
    return port


def _count(value: str) -> int:
    """A whole number of at least 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be 1 or more")
    return n


def _load_workers(value: str) -> int:
    """`auto`: one Locust process per two cores (the targets and PostgreSQL need the rest), at least one."""
    if value == "auto":
        return max(1, (os.cpu_count() or 1) // 2)
    return _count(value)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="connbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("targets", help="list the targets (strategy x driver) and whether they run here")
    s.set_defaults(func=cmd_targets)

    s = sub.add_parser("db", help="run an embedded PostgreSQL (and PgBouncer) in the foreground")
    s.add_argument("--port", type=_port, default=None, help="PostgreSQL port (default: a free one)")
    s.add_argument("--max-connections", type=_count, default=100)
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any server setting")
    s.add_argument("--pgbouncer-port", type=_port, default=None, help="PgBouncer port (default: a free one)")
    s.add_argument("--pgbouncer-pool", type=_count, default=10, help="PgBouncer server pool size")
    _add_path_options(s, many=False)
    s.set_defaults(func=cmd_db)

    s = sub.add_parser("serve", help="run one target under uvicorn (also the container command)")
    s.add_argument("target", help="a target id (see `connbench targets`)")
    s.add_argument("--port", type=_port, default=os.environ.get("CONNBENCH_PORT", "8000"))
    s.add_argument("--host", default=os.environ.get("CONNBENCH_HOST", "127.0.0.1"))
    s.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: $CONNBENCH_DSN)")
    s.add_argument("--workers", type=_count, default=os.environ.get("CONNBENCH_WORKERS", "1"))
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
    s.add_argument("--plan", action="store_true", help="print the cells and their planned duration, run nothing")
    s.add_argument("--load-workers", type=_load_workers, default=1, help="Locust processes (its --processes), or auto")
    _add_path_options(s, many=True)
    _add_service_options(s)
    s.add_argument(
        "--load-master", type=_host_port, default=None, metavar="HOST:PORT",
        help="Locust's master listens here for --load-workers N `connbench load-worker`s on other machines",
    )  # fmt: skip
    s.set_defaults(func=cmd_run, parser=s)

    s = sub.add_parser("baseline", help="pgbench with and without -C on the World query; wrk where installed")
    s.add_argument("--clients", type=_count, default=8)
    s.add_argument("--seconds", type=_count, default=5)
    _add_path_options(s, many=True, pooler=False)
    s.add_argument("--dsn", default=None, help="an existing PostgreSQL instead of the embedded one")
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
    from benchmarks.run.up import run_up

    targets = _split(args.targets, "--targets")
    return run_up(
        targets,
        args.web_port,
        args.max_connections,
        args.load_workers,
        args.locustfile,
        _path_options(args, False),
        dsn=args.dsn,
        user_targets=_user_targets(args),
    )


def _add_up(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("up", help="the whole stack as local processes plus the Locust web UI (Ctrl-C stops)")
    s.add_argument("--web-port", type=_port, default=8089, help="Locust web UI port on 127.0.0.1")
    s.add_argument("--targets", default=None, help="comma-separated target ids (default: all runnable)")
    s.add_argument("--max-connections", type=_count, default=100, help="PostgreSQL max_connections")
    s.add_argument(
        "--load-workers", type=int, default=0, help="run Locust as a master with N local workers (default: 0)"
    )
    s.add_argument("--locustfile", default=None, help="default: benchmarks/load/locustfile.py")
    _add_path_options(s, many=False)
    _add_service_options(s)
    s.set_defaults(func=cmd_up)


_extra_commands.append(_add_up)


# -- your service, your database -----------------------------------------------------------------------
def _add_service_options(s: argparse.ArgumentParser) -> None:
    """--target-file, --url, --app-name and --dsn (README "Measure your own service")."""
    s.add_argument(
        "--target-file", action="append", default=[], metavar="FILE",
        help="a TOML file describing a service connbench starts (repeatable); see README",
    )  # fmt: skip
    s.add_argument(
        "--url", action="append", default=[], metavar="NAME=URL",
        help="a service already running, measured as target NAME (load scenarios only; repeatable)",
    )  # fmt: skip
    s.add_argument(
        "--app-name", action="append", default=[], metavar="NAME=APPNAME",
        help="the application_name of the --url service's connections (role:ROLE: its role); default connbench:NAME",
    )  # fmt: skip
    s.add_argument(
        "--dsn", default=None, help="an existing PostgreSQL (its role needs pg_monitor) instead of the embedded one"
    )


def _user_targets(args: argparse.Namespace) -> list:
    from pathlib import Path

    from targets.yours import load_target_file, url_targets

    return [load_target_file(Path(f)) for f in args.target_file] + url_targets(args.url, args.app_name)


def _database(dsn: str | None):  # noqa: ANN202 - ExternalPostgres | None, imported lazily
    """The checked existing database of --dsn, or None for the embedded one."""
    if dsn is None:
        return None
    from benchmarks.stack.external import ExternalPostgres

    db = ExternalPostgres(dsn)
    db.check()
    return db


def cmd_verify(args: argparse.Namespace) -> int:
    from benchmarks.run.verify import choose_verified

    db = _database(args.dsn)
    targets, skipped = choose_verified(_split(args.targets, "--targets"), _user_targets(args), db, say=print)
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


def _add_verify(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("verify", help="check that each target answers /db and shows its connections, then stop")
    s.add_argument("--targets", default=None, help="comma-separated target ids (default: all runnable)")
    _add_service_options(s)
    s.set_defaults(func=cmd_verify)


_extra_commands.append(_add_verify)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    _port(port)
    return value


def cmd_load_worker(args: argparse.Namespace) -> int:
    """Locust workers for `connbench run --load-master`, one after another: each cell's master ends its workers."""
    import subprocess

    from targets.yours import register

    register(_user_targets(args))  # the workers' user classes must match the master's
    host, _, port = args.master.rpartition(":")
    from benchmarks.load import LOCUSTFILE as locustfile

    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--worker", "--master-host", host,
           "--master-port", port, "--loglevel", "WARNING"]  # fmt: skip
    print(f"# load worker for the master at {args.master}; Ctrl-C stops", flush=True)
    while True:
        subprocess.run(cmd, stdin=subprocess.DEVNULL)
        time.sleep(0.5)


def _add_load_worker(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("load-worker", help="Locust load worker for `connbench run --load-master` (until Ctrl-C)")
    s.add_argument("--master", type=_host_port, required=True, metavar="HOST:PORT", help="the run's --load-master")
    s.add_argument("--url", action="append", default=[], metavar="NAME=URL", help="the run's --url options")
    s.add_argument("--app-name", action="append", default=[], metavar="NAME=APPNAME", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_load_worker, target_file=[])


_extra_commands.append(_add_load_worker)


# -- build ---------------------------------------------------------------------------------------------
def cmd_build(args: argparse.Namespace) -> int:
    unknown = [f for f in args.families if f not in families.FAMILIES]
    if unknown:
        raise ConnbenchError(f"unknown family {unknown[0]!r}; families to build: {', '.join(families.FAMILIES)}")
    failed = 0
    for family in families.FAMILIES.values():
        if args.families and family.name not in args.families:
            continue
        reason = families.build(family, force=args.force)
        print(f"{family.name}: {reason or 'ready'}", flush=True)
        failed += bool(reason)
    return 1 if failed else 0


def _add_build(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("build", help="build the target families that need it (Node: npm ci, generate, bundle)")
    s.add_argument("families", nargs="*", metavar="FAMILY", help=f"default: all ({', '.join(families.FAMILIES)})")
    s.add_argument("--force", action="store_true", help="rebuild even when the cached build matches")
    s.set_defaults(func=cmd_build)


_extra_commands.append(_add_build)


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
