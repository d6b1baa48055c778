"""What several commands share: the one-line-error parser, argument types and option groups."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeAlias

from benchmarks.errors import ConnbenchError

if TYPE_CHECKING:
    from benchmarks.run.options import ConnectionPath
    from benchmarks.stack.external import ExternalPostgres
    from targets.yours import UserTarget

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Parser(argparse.ArgumentParser):
    """argparse with the suite's one-line errors (the usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


# -- argument types ------------------------------------------------------------------------------------
def count(value: str) -> int:
    """A whole number of at least 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be 1 or more")
    return n


def port(value: str) -> int:
    number = count(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1-65535)")
    return number


def host_port(value: str) -> str:
    host, sep, number = value.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    port(number)
    return value


def load_workers(value: str) -> int:
    """`auto`: one Locust process per two cores (the targets and PostgreSQL need the rest), at least one."""
    if value == "auto":
        return max(1, (os.cpu_count() or 1) // 2)
    return count(value)


def split(value: str | None, option: str = "the option") -> list[str] | None:
    """A comma-separated option's items, None when not given."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConnbenchError(f"{option} names nothing: {value!r}")
    return items


def parse_set(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConnbenchError(f"--set expects name=value, got {item!r}")
        out[name] = value
    return out


# -- the connection path -------------------------------------------------------------------------------
def add_path_options(s: argparse.ArgumentParser, many: bool, pooler: bool = True) -> None:
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


def path_options(args: argparse.Namespace, many: bool) -> ConnectionPath:
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


# -- your service, your database -----------------------------------------------------------------------
def add_service_options(s: argparse.ArgumentParser) -> None:
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


def user_targets(args: argparse.Namespace) -> list[UserTarget]:
    """The services of --target-file and --url."""
    from targets.yours import load_target_file, url_targets

    return [load_target_file(Path(f)) for f in args.target_file] + url_targets(args.url, args.app_name)


def database(dsn: str | None) -> ExternalPostgres | None:
    """The checked existing database of --dsn, or None for the embedded one."""
    if dsn is None:
        return None
    from benchmarks.stack.external import ExternalPostgres

    db = ExternalPostgres(dsn)
    db.check()
    return db
