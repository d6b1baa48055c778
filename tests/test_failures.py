"""The failures production connections meet, each reproduced for real and its outcome pinned.

The silent drop, the restarted pooler and the frozen function are read from the session's smoke profile run
(conftest.py `smoke_run`: each runs there once); PgBouncer's PAUSE/RESUME on the session's PgBouncer; the
middlebox's clean-up after a SIGKILL of connbench by a run of its own.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import psycopg
import pytest
from helpers import REPO, run_connbench, timeseries_events

from benchmarks.stack import middlebox
from benchmarks.stack.pgbouncer import PgBouncer

needs_root = pytest.mark.skipif(middlebox.unavailable() is not None, reason=str(middlebox.unavailable()))


def cells(run: Path, scenario: str) -> pd.DataFrame:
    s = pd.read_csv(run / "summary.csv")
    return s[s["scenario"] == scenario]


def events(run: Path, cell_id: str) -> list[str]:
    return timeseries_events(run, cell_id=cell_id)


def middlebox_leftovers() -> list[str]:
    """Namespaces (cbmb-<pid>-<n>) and host-side interfaces (cbmb<pid>x<n>) of middleboxes, any run's."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.split()
    return [w.split("@")[0].rstrip(":") for w in ns + links if w.startswith(middlebox.PREFIX)]


def run_pid(name: str) -> str:
    """The pid (an interface name holds its last 5 digits) of the run a middlebox name belongs to."""
    return name.split("-")[1] if "-" in name else name.removeprefix(middlebox.PREFIX).split("x")[0]


# -- a silent drop -------------------------------------------------------------------------------------
@needs_root
def test_a_silent_drop_hangs_a_pool_with_defaults_and_an_idle_limit_below_it_never_notices(smoke_run: Path) -> None:
    s = cells(smoke_run, "silent-drop").set_index("cell_id")
    assert len(s) == 2, list(s.index)
    params = {c: json.loads(p)["idle_timeout"] for c, p in s["params"].items()}
    default = s.loc[next(c for c, v in params.items() if v == 0)]
    defended = s.loc[next(c for c, v in params.items() if v > 0)]
    for row in (default, defended):
        assert row["valid"], row["invalid_reason"]
        assert "mark:after-idle" in events(smoke_run, row.name)
    # Its idle connections were forgotten by the middlebox: the next requests' packets vanished, nothing
    # failed fast, every user's request hung until the load ended, and PostgreSQL kept the sessions.
    assert default["dropped_packets"] > 0
    assert default["errors_after_action"] >= 1
    assert not default["recovered"] and pd.isna(default["recovery_s"])
    assert default["hang_s"] >= 1.0  # sent right after the gap, still unanswered when the load stopped
    assert default["orphans"] >= 1
    # The pool closed its connections after 1 s idle, before the middlebox forgot them: new ones, no failure.
    assert defended["errors_after_action"] == 0, defended["errors"]
    assert defended["recovered"]


@needs_root
def test_tcp_user_timeout_turns_the_hang_into_failures_that_end(tmp_path: Path) -> None:
    """The same silent drop with libpq's tcp_user_timeout 0.5 s: the kernel gives a dead connection up once its
    data goes unacknowledged that long. psycopg_pool's requests fail fast (each dead pooled connection once) and
    it then opens new ones through the middlebox; Django's liveness check (CONN_HEALTH_CHECKS) now fails fast
    too, so Django reconnects before the query and no request fails."""
    out = tmp_path / "run"
    proc = run_connbench(
        "run", "--profile", "smoke", "--scenarios", "silent-drop", "--targets", "pool-eager-psycopg,django-persistent",
        "--out", str(out), "--no-report", "--no-baseline", env={"CONNBENCH_TCP_USER_TIMEOUT": "0.5"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = cells(out, "silent-drop")
    default = s[s["params"].map(lambda p: json.loads(p)["idle_timeout"] == 0)].set_index("target")
    assert default["valid"].all(), default["invalid_reason"]
    assert json.loads((out / "manifest.json").read_text())["target_settings"]["tcp_user_timeout"] == 0.5
    assert (default["dropped_packets"] > 0).all()
    pool, checked = default.loc["pool-eager-psycopg"], default.loc["django-persistent"]
    assert 1 <= pool["errors_after_action"] <= 10  # at most once per pooled connection (pool_min 10)
    assert pool["recovered"], pool["errors"]
    assert pool["hang_s"] < 2.5  # well before the target's own 3 s request timeout
    assert checked["errors_after_action"] <= 1 and checked["recovered"], checked["errors"]


@needs_root
def test_no_middlebox_is_left_after_a_run(smoke_run: Path) -> None:
    """The smoke run has ended: no namespace or interface of a middlebox whose run is gone remains."""
    left = middlebox_leftovers()
    live = {run_pid(w)[-5:] for w in left if "-" in w and psutil.pid_exists(int(run_pid(w)))}
    assert [w for w in left if run_pid(w)[-5:] not in live] == []


@needs_root
def test_a_sigkilled_run_leaves_no_middlebox(tmp_path: Path) -> None:
    """connbench killed by SIGKILL while its middlebox is up: the guard process removes the namespace."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cli", "run", "--profile", "smoke", "--scenarios", "silent-drop",
         "--no-baseline", "--no-report", "--out", str(out)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    mine = str(proc.pid)
    try:
        deadline = time.monotonic() + 120
        while not any(run_pid(w) == mine for w in middlebox_leftovers()):
            assert proc.poll() is None, "the run ended before its middlebox was seen"
            assert time.monotonic() < deadline, "no middlebox within 120 s"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while any(run_pid(w)[-5:] == mine[-5:] for w in middlebox_leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [w for w in middlebox_leftovers() if run_pid(w)[-5:] == mine[-5:]]


# -- a restarted pooler --------------------------------------------------------------------------------
def test_a_restarted_pgbouncer_is_survived_by_per_request_clients(smoke_run: Path) -> None:
    (row,) = cells(smoke_run, "pooler-restart").itertuples()
    assert row.target == "pgbouncer-asyncpg" and row.valid, row.invalid_reason
    assert {"pooler-stop:fast", "pooler-up"} <= set(events(smoke_run, row.cell_id))
    assert row.errors_after_action >= 1  # the requests on PgBouncer's closed client connections, and refused ones
    assert row.recovered  # each request connects anew: once PgBouncer listens again, they succeed
    assert row.recovery_s < 2.0


def test_pgbouncer_pause_holds_queries_and_resume_releases_them(bouncer: PgBouncer) -> None:
    done = threading.Event()

    def query() -> None:
        with psycopg.connect(bouncer.dsn, connect_timeout=20) as conn:
            conn.execute("SELECT 1")
        done.set()

    bouncer.console("PAUSE")
    try:
        worker = threading.Thread(target=query, daemon=True)
        worker.start()
        assert not done.wait(1.0)  # held by PgBouncer, not failed
    finally:
        bouncer.console("RESUME")
    assert done.wait(20)


# -- a frozen function ---------------------------------------------------------------------------------
def test_a_frozen_pool_holds_its_connections_until_idle_session_timeout(smoke_run: Path) -> None:
    (row,) = cells(smoke_run, "frozen").itertuples()
    assert row.valid, row.invalid_reason
    seen = events(smoke_run, row.cell_id)
    assert {"freeze", "thaw"} <= set(seen)
    assert row.conn_peak >= 20  # the two processes' pool-eager pools (2 × 10), open when they were frozen
    # PostgreSQL held them until idle_session_timeout (4 s) ended them, before the thaw 5.4 s after the freeze
    assert 0.3 <= row.release_s <= 5.4, row.release_s
    # meanwhile a new instance found 2 of the role's 22 connections for its pool of 10: PostgreSQL refused it
    # (53300) and its eager pool took it down; the one started after the timeout served every request
    instances = [e for e in seen if e.startswith("instance:")]
    assert instances == ["instance:died:53300", "instance:ok=5"], seen
    assert row.instances_refused == 1
    # asyncpg saw the closed connections on waking and opened new ones before the first request needed them
    assert row.recovered
