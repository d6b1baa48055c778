"""Watches PostgreSQL and the processes while load runs.

One connection of its own (the superuser on the embedded stack, or the --dsn's role with pg_monitor; database
`postgres` where it may; application_name `connbench:sampler`, excluded from every count) polls
`pg_stat_activity` per application_name and per role and `pg_stat_database.sessions` of the targets'
database several times a second; psutil samples the target's process tree and the load generator.
The same `poll_connections` feeds `connbench run` and the live panel of the Locust web UI.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg

from targets.contract import TOO_MANY_MESSAGES

SAMPLER_APP = "connbench:sampler"
# Every client of the database but the sampler, by application_name and role: a target is counted under its
# application_name (`connbench:<id>`, or what a user's service sets) or, for a user's service recognised by its
# role, under "role:<name>" (Target.conn_key). Other users' rows need pg_read_all_stats (pg_monitor) to show.
CONNECTIONS_SQL = """
SELECT application_name, usename,
       count(*) AS total,
       count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE state LIKE 'idle%%') AS idle
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND datname = %s AND application_name <> 'connbench:sampler'
GROUP BY application_name, usename
"""
SESSIONS_SQL = "SELECT sessions FROM pg_stat_database WHERE datname = %s"
# The sessions of one client (its application_name, or "role:<name>"), ended as a failover or an admin would.
TERMINATE_SQL = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND datname = %s AND (application_name = %s OR 'role:' || usename = %s)
"""


PIDS_SQL = """
SELECT pid FROM pg_stat_activity
WHERE backend_type = 'client backend' AND datname = %s AND (application_name = %s OR 'role:' || usename = %s)
"""


def backend_memory_mb(conn: psycopg.Connection, key: str, dbname: str = "connbench") -> float | None:
    """The mean proportional set size (MB: its private pages and its share of shared ones, shared_buffers
    included) of the client `key`'s backends now; None when it has none or they cannot be read (PostgreSQL
    on another machine)."""
    sizes = []
    for (pid,) in conn.execute(PIDS_SQL, (dbname, key, key)).fetchall():
        try:
            sizes.append(psutil.Process(pid).memory_full_info().pss / 1e6)
        except (psutil.Error, AttributeError):
            continue
    return round(sum(sizes) / len(sizes), 2) if sizes else None


def open_monitor(admin_dsn: str, wait_s: float = 10.0) -> psycopg.Connection:
    """A sampler connection: autocommit and no stats snapshot, so every poll reads fresh counters.

    Under a lowered max_connections the previous cell's backends may still be exiting when the next cell
    starts (a leaky target's dozen sessions end only as its process goes): PostgreSQL's refusals for lack of
    slots (TOO_MANY_MESSAGES) are retried for `wait_s`, any other error raised at once."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = psycopg.connect(admin_dsn, autocommit=True, application_name=SAMPLER_APP, connect_timeout=5)
            break
        except psycopg.OperationalError as exc:
            if not any(m in str(exc) for m in TOO_MANY_MESSAGES) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.execute("SET stats_fetch_consistency = none")
    return conn


def poll_connections(conn: psycopg.Connection, dbname: str = "connbench") -> dict[str, dict[str, int]]:
    """{application_name or "role:<name>": {total, active, idle}} for every client of `dbname`."""
    out: dict[str, dict[str, int]] = {}
    for name, role, *figures in conn.execute(CONNECTIONS_SQL, (dbname,)).fetchall():
        for key in (name, f"role:{role}"):
            counts = out.setdefault(key, {"total": 0, "active": 0, "idle": 0})
            for k, v in zip(("total", "active", "idle"), figures, strict=True):
                counts[k] += v
    return out


def terminate_sessions(conn: psycopg.Connection, key: str, dbname: str = "connbench") -> int:
    """pg_terminate_backend on every session of the client `key` (Target.conn_key); how many it ended."""
    row = conn.execute(TERMINATE_SQL, (dbname, key, key)).fetchone()
    return int(row[0]) if row else 0


def poll_sessions(conn: psycopg.Connection, dbname: str = "connbench") -> int:
    """Sessions ever opened on `dbname` (PostgreSQL >= 14; flushed by backends within about a second)."""
    row = conn.execute(SESSIONS_SQL, (dbname,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def tree_usage(proc: psutil.Process, reaped: bool = False) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of a process and its children (uvicorn --workers forks). `reaped`: also the CPU
    of the children that have exited and been waited for (PostgreSQL's backends, one per session: a session
    that ended during the window still counts)."""
    rss = 0.0
    cpu = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            with p.oneshot():
                rss += p.memory_info().rss
                t = p.cpu_times()
                cpu += t.user + t.system
                if reaped and p is proc:
                    cpu += t.children_user + t.children_system
        except psutil.Error:
            continue
    return rss / 1e6, cpu


@dataclass
class Sample:
    t: float
    connections: dict[str, dict[str, int]]
    sessions: int | None
    processes: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (rss MB, cpu s)
    db_up: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The polled figures as the summary's arithmetic reads them (benchmarks/results/summary.py)."""
        return {"t": self.t, "connections": self.connections, "sessions": self.sessions, "db_up": self.db_up}


class Sampler:
    """Polls in a background thread until stopped; survives database restarts (reconnects, marks gaps)."""

    def __init__(self, admin_dsn: str, interval: float = 0.2, dbname: str = "connbench") -> None:
        self.admin_dsn = admin_dsn
        self.interval = interval
        self.dbname = dbname
        self.samples: list[Sample] = []
        self._procs: dict[str, psutil.Process] = {}
        self._reaped: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None

    def watch(self, name: str, pid: int, reaped: bool = False) -> None:
        """Sample the process tree of `pid` as `name` (`reaped`: its exited children's CPU too, tree_usage)."""
        try:
            self._procs[name] = psutil.Process(pid)
        except psutil.Error:
            return
        if reaped:
            self._reaped.add(name)

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="connbench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop polling and take one last sample now (the state right after the load), not a tick later."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self.samples.append(self.sample_once())
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        return self.samples

    def sample_once(self) -> Sample:
        connections: dict[str, dict[str, int]] = {}
        sessions: int | None = None
        db_up = True
        try:
            if self._conn is None or self._conn.closed:
                self._conn = open_monitor(self.admin_dsn)
            connections = poll_connections(self._conn, self.dbname)
            sessions = poll_sessions(self._conn, self.dbname)
        except psycopg.Error:
            db_up = False
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        procs = {}
        for name, proc in list(self._procs.items()):  # watch() may add one meanwhile
            try:
                procs[name] = tree_usage(proc, name in self._reaped)
            except psutil.Error:
                continue
        return Sample(time.time(), connections, sessions, procs, db_up)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append(self.sample_once())
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def summarize_usage(samples: list[Sample], name: str) -> dict[str, Any]:
    """Peak RSS and mean CPU % of one watched process tree over the samples."""
    points = [(s.t, *s.processes[name]) for s in samples if name in s.processes]
    if len(points) < 2:
        return {"rss_mb": None, "cpu_pct": None, "cpu_pct_max": None, "cpu_s": None}
    (t0, _, c0), (t1, _, c1) = points[0], points[-1]
    steps = [
        100 * (b[2] - a[2]) / (b[0] - a[0]) for a, b in zip(points, points[1:], strict=False) if b[0] - a[0] >= 0.05
    ]
    return {
        "rss_mb": max(p[1] for p in points),
        "cpu_pct": 100 * (c1 - c0) / (t1 - t0) if t1 > t0 else None,
        "cpu_pct_max": max(steps) if steps else None,
        "cpu_s": c1 - c0,
    }
