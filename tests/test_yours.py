"""A user's service and a user's database: --url, --target-file, --dsn and `connbench verify`, end to end.

The service is one of connbench's own targets started outside connbench (by the test, or by a target file's
command); the database is the test session's PostgreSQL given as an existing one with --dsn.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest
from helpers import CONNBENCH, REPO, query, run_connbench

from benchmarks.errors import ConnbenchError
from benchmarks.stack.external import ExternalPostgres
from benchmarks.stack.postgres import make_dsn
from benchmarks.stack.procs import free_port
from targets.contract import Settings
from targets.yours import load_target_file, url_targets

APP = "connbench:pool-eager-asyncpg"
EXAMPLE = REPO / "benchmarks" / "examples" / "my-service.toml"
# the example's command is `connbench serve ...`: the console script of this interpreter's environment
PATH_ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("connbench: error:"), proc.stderr
    return lines[0]


@pytest.fixture
def wrong_json() -> Iterator[str]:
    """A service whose /db answers JSON of the wrong shape."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b'{"id": "1", "randomNumber": 2}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def limited_role(pg) -> Iterator[tuple[str, str]]:
    """(role, password): may log in, owns nothing, has no pg_monitor; and a database `empty` without a World."""
    password = "limited-pw-0123"
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE limited LOGIN PASSWORD '{password}'")
        conn.execute("CREATE DATABASE empty")
        conn.execute("CREATE DATABASE fresh OWNER connbench")
    try:
        yield "limited", password
    finally:
        with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
            conn.execute("DROP DATABASE empty WITH (FORCE)")
            conn.execute("DROP DATABASE fresh WITH (FORCE)")
            conn.execute("DROP ROLE limited")


# -- a service already running, on an existing database -----------------------------------------------
def test_url_target_on_existing_database(pg, serve, tmp_path: Path) -> None:
    target = serve("pool-eager-asyncpg")
    out = tmp_path / "run"
    dead = f"http://127.0.0.1:{free_port()}"
    proc = run_connbench(
        "run", "--profile", "smoke", "--scenarios", "steady,shutdown,db-restart", "--no-baseline", "--no-report",
        "--url", f"mine={target.url}", "--app-name", f"mine={APP}", "--url", f"dead={dead}", "--dsn", pg.dsn,
        "--out", str(out), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest_text = (out / "manifest.json").read_text()
    assert pg.password not in manifest_text + proc.stdout + proc.stderr  # the DSN is masked everywhere
    manifest = json.loads(manifest_text)
    assert manifest["status"] == "complete" and manifest["targets"] == ["mine"]
    assert manifest["skipped_targets"]["dead"].startswith("verify failed: GET")
    why = {cell.split(".")[0]: reason for cell, reason in manifest["skipped_cells"].items()}
    assert "sigterm" in why["shutdown"] and "restarts PostgreSQL" in why["db-restart"]
    assert manifest["database"]["dsn"].startswith("postgresql://connbench:***@")
    row = pd.read_csv(out / "summary.csv").set_index("cell_id").loc["steady.mine.u8.r1"]
    assert row["valid"] and row["requests"] > 0 and row["failures"] == 0
    # the sampler counted the service's connections by its application_name: pool-eager holds its whole pool
    assert row["conn_peak"] == Settings().pool_min
    assert row["sessions_per_request"] < 0.01  # a pool: no session per request
    assert target.proc.poll() is None  # connbench did not stop what it did not start


# -- a service connbench starts from a target file ------------------------------------------------------
def test_target_file_runs_steady_and_shutdown(pg, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_connbench(
        "run", "--profile", "smoke", "--scenarios", "steady,shutdown", "--no-baseline", "--no-report",
        "--target-file", str(EXAMPLE), "--dsn", pg.dsn, "--out", str(out), env=PATH_ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(out / "summary.csv").set_index("cell_id")
    steady, shutdown = summary.loc["steady.my-service.u8.r1"], summary.loc["shutdown.my-service.u8.r1"]
    assert steady["valid"] and steady["requests"] > 0 and steady["conn_peak"] == Settings().pool_min
    assert steady["strategy"] == "pool-eager" and steady["time_to_ready_s"] > 0
    # connbench started it, sent SIGTERM mid-load: it drained, ran its exit hook and released its pool
    assert shutdown["target_exit"] == 0 and shutdown["shutdown_logged"] == True  # noqa: E712 - a CSV bool
    assert shutdown["release_s"] >= 0


# -- what is wrong, in one line ----------------------------------------------------------------------------
def test_verify_names_each_broken_target(pg, serve, wrong_json: str) -> None:
    target = serve("pool-eager-asyncpg")
    dead = f"http://127.0.0.1:{free_port()}"
    proc = run_connbench(
        "verify", "--dsn", pg.dsn, "--url", f"good={target.url}", "--app-name", f"good={APP}",
        "--url", f"dead={dead}", "--url", f"shape={wrong_json}", "--url", f"unseen={target.url}",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["good"] == "ok"
    assert lines["dead"].startswith(f"FAILED: GET {dead}/db failed")
    assert 'not {"id": <int>, "randomNumber": <int>}' in lines["shape"]
    assert "application_name 'connbench:unseen'" in lines["unseen"]  # no --app-name: nothing counted as its own


def test_run_with_no_working_target_writes_nothing(pg, wrong_json: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_connbench("run", "--profile", "smoke", "--url", f"shape={wrong_json}", "--dsn", pg.dsn,
                         "--no-baseline", "--no-report", "--out", str(out))  # fmt: skip
    assert "shape: verify failed" in one_error_line(proc)
    assert not out.exists()


def test_dsn_refusing_the_password(pg, tmp_path: Path) -> None:
    bad = make_dsn("connbench", "not-the-password", pg.port, "connbench")
    out = tmp_path / "run"
    proc = run_connbench("run", "--profile", "smoke", "--url", "x=http://127.0.0.1:9", "--dsn", bad,
                         "--no-baseline", "--no-report", "--out", str(out))  # fmt: skip
    line = one_error_line(proc)
    assert "password authentication failed" in line and "not-the-password" not in line
    assert not out.exists()


def test_database_without_world_and_without_the_right_to_create_it(pg, limited_role, tmp_path: Path) -> None:
    role, password = limited_role
    dsn = make_dsn(role, password, pg.port, "empty")
    out = tmp_path / "run"
    proc = run_connbench("run", "--profile", "smoke", "--url", "x=http://127.0.0.1:9", "--dsn", dsn,
                         "--no-baseline", "--no-report", "--out", str(out))  # fmt: skip
    line = one_error_line(proc)
    assert "no World table" in line and "'limited' may not create it" in line and password not in line
    assert not out.exists()


def test_existing_database_checks(pg, limited_role) -> None:
    """The World is created where the role may (and only then); the sampler's rights are named when missing."""
    fresh = ExternalPostgres(make_dsn("connbench", pg.password, pg.port, "fresh"))
    fresh.check()
    assert fresh.created == ["world", "shutdown_log"]
    assert query(fresh.dsn, "SELECT count(*) FROM world")[0][0] == 10_000
    again = ExternalPostgres(fresh.dsn)
    again.check()
    assert again.created == []  # nothing touched the second time
    role, password = limited_role
    with psycopg.connect(pg.superuser_dsn("fresh"), autocommit=True) as conn:
        conn.execute(f"GRANT SELECT ON world, shutdown_log TO {role}")
    with pytest.raises(ConnbenchError, match="GRANT pg_monitor TO limited"):
        ExternalPostgres(make_dsn(role, password, pg.port, "fresh")).check()


def test_target_file_and_url_options_name_their_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "typo.toml"
    bad.write_text('name = "x"\ncommand = ["x"]\napplication_nmae = "x"\n')
    with pytest.raises(ConnbenchError, match=rf"{bad}: unknown key 'application_nmae'"):
        load_target_file(bad)
    bad.write_text('name = "x"\ncommand = ["x"]\n')
    with pytest.raises(ConnbenchError, match="give one of 'application_name' or 'role'"):
        load_target_file(bad)
    bad.write_text('name = "pool-eager-asyncpg"\ncommand = ["x"]\nrole = "r"\n')
    with pytest.raises(ConnbenchError, match="is a built-in target"):
        load_target_file(bad)
    example = load_target_file(EXAMPLE)
    cmd, env = example.launch(8123, "postgresql://u:p@h/d", 1)
    assert "8123" in cmd and env["CONNBENCH_DSN"] == "postgresql://u:p@h/d" and env["PORT"] == "8123"
    with pytest.raises(ConnbenchError, match="--url expects NAME=VALUE"):
        url_targets(["http://127.0.0.1:1"], [])
    with pytest.raises(ConnbenchError, match="--app-name names 'b', which no --url names"):
        url_targets(["a=http://127.0.0.1:1"], ["b=x"])
    (svc,) = url_targets(["a=http://127.0.0.1:1/"], ["a=role:svc"])
    assert svc.conn_key == "role:svc" and svc.url == "http://127.0.0.1:1"


def test_up_with_your_services(pg, serve, tmp_path: Path) -> None:
    """`connbench up` with a service already running (--url) and one it starts (--target-file): both in the
    UI's registry and the connection panel; up stops only the one it started."""
    from test_up import connbench_up

    mine = serve("pool-eager-asyncpg")
    theirs = tmp_path / "theirs.toml"
    theirs.write_text(
        'name = "theirs"\ncommand = ["connbench", "serve", "pool-eager-psycopg", "--port", "{port}"]\n'
        'env = { CONNBENCH_DSN = "{dsn}" }\napplication_name = "connbench:pool-eager-psycopg"\n'
    )
    args = ["--dsn", pg.dsn, "--url", f"mine={mine.url}", "--app-name", f"mine={APP}", "--target-file", str(theirs)]
    with connbench_up(*args, env=PATH_ENV) as up:
        assert list(up.targets()) == ["theirs"], up.output()  # no built-in target without --targets
        assert re.search(rf"mine +{re.escape(mine.url)} +\(already running\)", up.output()), up.output()
        started = up.targets()["theirs"]
        panel = httpx.get(up.web_url + "/connbench/connections", timeout=10).json()
        rows = {r["target"]: r["total"] for r in panel["targets"]}
        assert rows["mine"] == rows["theirs"] == Settings().pool_min, panel["targets"]
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(60) == 0, up.output()
    with pytest.raises(httpx.HTTPError):
        httpx.get(started + "/ready", timeout=2)  # the service up started is stopped
    assert httpx.get(mine.url + "/ready", timeout=5).status_code == 200  # the one it did not start still runs


# -- load from workers elsewhere (here: on loopback) -----------------------------------------------------
def test_load_from_remote_workers(pg, serve, tmp_path: Path) -> None:
    target = serve("pool-eager-asyncpg")
    master = f"127.0.0.1:{free_port()}"
    worker = subprocess.Popen(
        [*CONNBENCH, "load-worker", "--master", master, "--url", f"mine={target.url}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    try:
        out = tmp_path / "run"
        proc = run_connbench(
            "run", "--profile", "smoke", "--scenarios", "steady", "--no-baseline", "--no-report", "--dsn", pg.dsn,
            "--url", f"mine={target.url}", "--app-name", f"mine={APP}", "--load-master", master, "--load-workers", "1",
            "--out", str(out), timeout=300,
        )  # fmt: skip
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = pd.read_csv(out / "summary.csv").iloc[0]
    assert row["valid"] and row["requests"] > 0 and row["conn_peak"] == Settings().pool_min
    assert json.loads((out / "manifest.json").read_text())["load_master"] == master


def test_up_on_an_existing_database(pg) -> None:
    from test_up import connbench_up

    with connbench_up("--dsn", pg.dsn, "--targets", "pool-eager-asyncpg,pgbouncer-asyncpg") as up:
        assert list(up.targets()) == ["pool-eager-asyncpg"], up.output()
        assert re.search(r"pgbouncer-asyncpg +skipped: connbench puts no PgBouncer", up.output()), up.output()
        assert pg.password not in up.output()
        panel = httpx.get(up.web_url + "/connbench/connections", timeout=10).json()
        assert panel["database"] == "connbench"
        row = next(r for r in panel["targets"] if r["target"] == "pool-eager-asyncpg")
        assert row["total"] == Settings().pool_min
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(60) == 0, up.output()
    query(pg.admin_dsn, "SELECT 1")  # the database connbench did not start is still there
