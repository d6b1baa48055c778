"""CONNBENCH_TCP_KEEPALIVE against a real PostgreSQL, seen on the targets' own sockets.

The kernel shows a socket's keepalive timer (`ss -o`: `timer:(keepalive,<left>,<probes>)`), so the test
reads it for each database connection a target holds, found by the process tree's TCP connections to
PostgreSQL's port. With CONNBENCH_TCP_KEEPALIVE=1 every connection of a libpq (psycopg, Django),
node-postgres (node, Prisma's pg pool) or postgres.js target has a keepalive timer of at most a second or
two; with the default none has one that short (libpq's is the OS's two hours, postgres.js's 60 s,
node-postgres has none).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import psutil
import pytest

TARGETS = ["pool-eager-psycopg", "django-persistent", "node-pg-pool", "node-postgres-js", "prisma-global"]
TIMER = re.compile(r"timer:\((\w+),([^,]+),\d+\)")

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")


def seconds(left: str) -> float:
    """ss's time left on a timer ("594ms", "59sec", "1min59sec", "119min") in seconds."""
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|sec|min)", left):
        total += int(number) * {"ms": 0.001, "sec": 1, "min": 60}[unit]
    return total


def keepalive_timers(pid: int, db_port: int) -> dict[int, str | None]:
    """For each TCP connection of process `pid` (or its descendants) to PostgreSQL's port: its local port and
    the time left on its keepalive timer (None: the socket has no keepalive timer running)."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    ports = {
        c.laddr.port
        for p in procs
        for c in p.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == db_port and c.status == psutil.CONN_ESTABLISHED
    }
    timers: dict[int, str | None] = {}
    for port in ports:
        out = subprocess.run(
            ["ss", "-tnoH", "state", "established", f"( sport = :{port} and dport = :{db_port} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = TIMER.search(out)
        timers[port] = found.group(2) if found and found.group(1) == "keepalive" else None
    return timers


@pytest.mark.parametrize("tcp_keepalive", ["1", ""], ids=["tcp_keepalive=1", "default"])
def test_keepalive_reaches_every_database_connection(tcp_keepalive: str, pg, serve) -> None:
    """Two requests at once open (or use) two connections per target; each connection's keepalive timer is
    then read from the kernel."""
    env = {"CONNBENCH_TCP_KEEPALIVE": tcp_keepalive, "CONNBENCH_POOL_MIN": "2", "CONNBENCH_POOL_MAX": "2"}
    for t in [serve(target, env=env) for target in TARGETS]:
        assert [r.status_code for r in t.burst(2, "/db?work_ms=100&hold=1")] == [200, 200]
        assert t.stats()["settings"]["tcp_keepalive"] == float(tcp_keepalive or 0)
        timers = keepalive_timers(t.proc.pid, pg.port)
        assert timers, (t.target_id, "no connection to PostgreSQL")
        if tcp_keepalive:
            assert all(left is not None and seconds(left) <= 2 for left in timers.values()), (t.target_id, timers)
        else:
            assert all(left is None or seconds(left) > 2 for left in timers.values()), (t.target_id, timers)
