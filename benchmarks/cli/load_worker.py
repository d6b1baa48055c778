"""`connbench load-worker`: Locust load workers for `connbench run --load-master` on another machine."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import NoReturn

from benchmarks.cli.common import Subparsers, host_port, user_targets


def register(sub: Subparsers) -> None:
    s = sub.add_parser("load-worker", help="Locust load worker for `connbench run --load-master` (until Ctrl-C)")
    s.add_argument("--master", type=host_port, required=True, metavar="HOST:PORT", help="the run's --load-master")
    s.add_argument("--url", action="append", default=[], metavar="NAME=URL", help="the run's --url options")
    s.add_argument("--app-name", action="append", default=[], metavar="NAME=APPNAME", help=argparse.SUPPRESS)
    s.set_defaults(func=handle, target_file=[])


def handle(args: argparse.Namespace) -> NoReturn:
    """Locust workers one after another: each cell's master ends its workers."""
    from benchmarks.load import LOCUSTFILE as locustfile
    from targets.yours import child_env
    from targets.yours import register as register_targets

    register_targets(user_targets(args))  # the workers' user classes must match the master's
    host, _, port = args.master.rpartition(":")
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--worker", "--master-host", host,
           "--master-port", port, "--loglevel", "WARNING"]  # fmt: skip
    print(f"# load worker for the master at {args.master}; Ctrl-C stops", flush=True)
    while True:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, env=child_env())
        time.sleep(0.5)
