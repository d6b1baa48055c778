"""The production connection path: scram by default, --tls, --rtt (the delay relay) and --pooler placement.

Timings here are lower bounds set by the emulated distance (the relay cannot deliver early), so they hold on a
loaded machine; the one upper bound (--rtt 0) has a wide margin.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psutil
import psycopg
import pytest
from helpers import CONNBENCH, REPO, run_connbench, service_dirs

from benchmarks.results.summary import BASELINE_COLUMNS, PATH_COLUMNS, SUMMARY_COLUMNS, TIMESERIES_COLUMNS
from benchmarks.stack.pgbouncer import missing_reason
from benchmarks.stack.postgres import EmbeddedPostgres


@contextmanager
def connbench_db(*args: str) -> Iterator[dict[str, str]]:
    """Run `connbench db ARGS`, yield its DSN lines by name, then Ctrl-C it and check nothing is left."""
    proc = subprocess.Popen(
        [*CONNBENCH, "db", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        line = ""
        while not line.startswith("# Ctrl-C"):
            assert time.monotonic() < deadline and proc.poll() is None, (lines, proc.poll())
            line = proc.stdout.readline().strip()
            name, sep, value = line.partition(": ")
            if sep and not line.startswith("#"):
                lines[name] = value
        children = psutil.Process(proc.pid).children(recursive=True)
        dirs = service_dirs(proc.pid)
        yield lines
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) in (0, 130), proc.stderr.read() if proc.stderr else ""
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not [d for d in dirs if Path(d).exists()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def connect_and_select(dsn: str, n: int = 3) -> tuple[float, float]:
    """Median seconds of a new connection and of `SELECT 1` on it (autocommit: one round trip)."""
    connects, selects = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
            t1 = time.perf_counter()
            conn.execute("SELECT 1")
            selects.append(time.perf_counter() - t1)
        connects.append(t1 - t0)
    return statistics.median(connects), statistics.median(selects)


@pytest.mark.parametrize("tls", [False, True], ids=["scram", "scram+tls"])
def test_db_rtt_20_every_round_trip_costs_20_ms(tls: bool) -> None:
    with connbench_db("--rtt", "20", *(["--tls"] if tls else [])) as lines:
        assert "postgres" in lines
        dsn = lines["postgres"]
        assert f"sslmode={'require' if tls else 'disable'}" in dsn
        connect, select = connect_and_select(dsn)
        # scram: TCP 1 + auth 3 round trips; TLS adds the SSLRequest and the TLS 1.3 handshake
        assert connect >= (5 if tls else 3) * 0.020, connect
        assert select >= 0.018, select
        with psycopg.connect(dsn, autocommit=True) as conn:
            ssl = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert ssl == (tls,)
        if not missing_reason():  # PgBouncer near the database: its clients pay the distance on connect too
            connect, select = connect_and_select(lines["pgbouncer"])
            assert connect >= 3 * 0.020 and select >= 0.018, (connect, select)


@pytest.mark.skipif(bool(missing_reason()), reason=missing_reason() or "")
def test_pooler_near_the_app_keeps_connects_local() -> None:
    with connbench_db("--rtt", "20", "--pooler", "near-db,near-app") as lines:
        near_db = connect_and_select(lines["pgbouncer-near-db"], n=5)
        near_app = connect_and_select(lines["pgbouncer-near-app"], n=5)
    # near the database every client connect crosses the distance; near the app only the query does
    assert near_db[0] >= 3 * 0.020 and near_db[0] >= 3 * near_app[0], (near_db, near_app)
    assert near_app[1] >= 0.018 and near_db[1] >= 0.018, (near_db, near_app)


def test_db_rtt_0_is_loopback() -> None:
    with connbench_db("--rtt", "0") as lines:
        connect, _ = connect_and_select(lines["postgres"], n=5)
        assert connect < 0.030, connect  # scram on loopback costs a few ms of CPU; no added round trip


def test_round_trips_per_connection_derived_from_pgbench() -> None:
    out = run_connbench("baseline", "--rtt", "0,20", "--tls", "off,on", "--seconds", "1", "--clients", "2",
                        timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    found = {}
    for line in out.stdout.splitlines():
        if line.startswith("pgbench  connect "):
            tls = "tls=on" in line
            found[tls] = float(line.split("round_trips=")[1].split()[0])
    assert 3 <= found[False] <= 5, found  # TCP 1 + scram 3
    assert 6 <= found[True] <= 8, found  # + SSLRequest 1 + TLS 1.3 with a HelloRetryRequest 2


def test_password_is_required_everywhere(pg: EmbeddedPostgres) -> None:
    host = f"host=127.0.0.1 port={pg.port}"
    for who in ("user=postgres dbname=postgres", "user=connbench dbname=connbench"):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(f"{host} {who} sslmode=disable", connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"{host} {who} password=wrong sslmode=disable", connect_timeout=5)
    # over the Unix socket too
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host={pg.dir} port={pg.port} user=postgres dbname=postgres", connect_timeout=5)
    # the server runs as the service user with that user's own group, never group 0
    if os.geteuid() == 0:
        proc = psutil.Process(pg.proc.pid)
        assert proc.uids().real != 0 and proc.gids().real != 0, (proc.uids(), proc.gids())
        status = Path(f"/proc/{pg.proc.pid}/status").read_text()
        groups = next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]
        assert "0" not in groups, groups


def test_pgbouncer_requires_the_password(bouncer) -> None:
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={bouncer.port} user=connbench dbname=connbench", connect_timeout=5)
    with psycopg.connect(bouncer.dsn, autocommit=True, prepare_threshold=None) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_bad_path_options_are_one_line() -> None:
    for args in (["db", "--rtt", "fast"], ["db", "--rtt", "0,10"], ["run", "--pooler", "far"], ["run", "--tls", "yes"]):
        out = run_connbench(*args, timeout=60)
        assert out.returncode != 0 and "Traceback" not in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)


def test_smoke_run_across_a_distance(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_connbench("run", "--profile", "smoke", "--scenarios", "distance", "--rtt", "0,10", "--tls",
                         "--targets", "per-request-asyncpg,pool-eager-asyncpg", "--out", str(out), "--no-report",
                         "--no-baseline", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS and set(PATH_COLUMNS) <= set(SUMMARY_COLUMNS)
    timeseries = pd.read_csv(out / "timeseries.csv")
    assert list(timeseries.columns) == TIMESERIES_COLUMNS
    assert set(timeseries["rtt_ms"]) == {0, 10} and timeseries["tls"].all()
    assert set(PATH_COLUMNS) <= set(BASELINE_COLUMNS)
    assert summary["tls"].all() and set(summary["rtt_ms"]) == {0, 10}
    assert summary["valid"].all(), summary[["cell_id", "invalid_reason"]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["path_override"] == [[0, 10], [True], None]
    assert manifest["scenarios"]["distance"]["rtt_ms"] == [0, 10]
    p50 = summary.set_index(["strategy", "rtt_ms"])["latency_p50_ms"]
    # per-request pays the distance on every connect (TCP 1 + TLS 3 + scram 3) and query: 8 round trips of 10 ms
    # (a difference, not a ratio: a busy machine slows both cells, and the relay's 10 ms per round trip is a floor)
    assert p50["per-request", 10] - p50["per-request", 0] >= 50, p50
    # a pool pays it once per query: about one round trip more (wide margins)
    grown = p50["pool-eager", 10] - p50["pool-eager", 0]
    assert 5 <= grown <= 30, p50


def test_network_table_makes_one_cell_per_path(tmp_path: Path) -> None:
    from benchmarks.errors import ConnbenchError
    from benchmarks.run.cells import plan, with_path_override
    from benchmarks.run.scenario import parse_scenario

    f = tmp_path / "far.toml"
    f.write_text(
        'targets = ["per-request-asyncpg", "pgbouncer-asyncpg"]\n[network]\nrtt_ms = [0, 10]\n'
        'pooler = ["near-db", "near-app"]\n[profiles.smoke]\nusers = [2]\nnetwork = {tls = true}\n'
    )
    sc = parse_scenario(f, "smoke")
    assert sc is not None and (sc.rtt_ms, sc.tls, sc.pooler) == ((0, 10), (True,), ("near-db", "near-app"))
    ids = [c.id for c in plan([sc], ["per-request-asyncpg", "pgbouncer-asyncpg"])]
    assert sorted(ids) == sorted(
        [
            "far.per-request-asyncpg.u2.tls.r1",
            "far.per-request-asyncpg.u2.rtt10.tls.r1",
            "far.pgbouncer-asyncpg.u2.tls.r1",
            "far.pgbouncer-asyncpg.u2.tls.near-app.r1",
            "far.pgbouncer-asyncpg.u2.rtt10.tls.r1",
            "far.pgbouncer-asyncpg.u2.rtt10.tls.near-app.r1",
        ]
    )
    (over,) = with_path_override([sc], ((2,), (False,), None))
    assert [c.id for c in plan([over], ["per-request-asyncpg"])] == ["far.per-request-asyncpg.u2.rtt2.r1"]
    for bad in ("rtt_ms = [-1]", 'tls = "yes"', 'pooler = ["far"]', "hops = 2"):
        f.write_text(f"[network]\n{bad}\n[profiles.smoke]\nusers = [2]\n")
        with pytest.raises(ConnbenchError, match=r"\[network\]"):
            parse_scenario(f, "smoke")
