"""`connbench up` as a real process: the stack starts, the Locust web UI answers, its start form with its
defaults loads every running target, and the panel charts their PostgreSQL connections, the leak climbing
(headless Chromium drives the page); Ctrl-C or SIGTERM leaves no process and no temporary directory behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from browser import Chromium, charts, find_chromium, start_with_form_defaults
from helpers import sigint_default

from benchmarks.stack.pgbouncer import missing_reason
from benchmarks.stack.procs import free_port
from targets.registry import TARGETS

REPO = Path(__file__).resolve().parents[1]
TARGET_LINE = re.compile(r"^\s+(\S+)\s+(http://127\.0\.0\.1:\d+)$")


@dataclass
class Up:
    proc: subprocess.Popen
    web_port: int
    lines: list[str] = field(default_factory=list)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def output(self) -> str:
        return "\n".join(self.lines)

    def targets(self) -> dict[str, str]:
        return {m.group(1): m.group(2) for line in self.lines if (m := TARGET_LINE.match(line))}

    def logs_dir(self) -> Path:
        line = next(line for line in self.lines if line.startswith("logs:"))
        return Path(line.split()[1])


@contextmanager
def connbench_up(*args: str, timeout: float = 240.0, env: dict[str, str] | None = None) -> Iterator[Up]:
    """Run `connbench up --web-port P ARGS` (`env`: added to the environment), wait for its banner; always end
    it (and check it ended)."""
    web_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cli", "up", "--web-port", str(web_port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        preexec_fn=sigint_default,
    )
    up = Up(proc, web_port)
    reader = threading.Thread(target=lambda: up.lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not any(line.startswith("# Ctrl-C stops") for line in up.lines):
            assert proc.poll() is None, f"connbench up exited with {proc.returncode}:\n{up.output()}"
            assert time.monotonic() < deadline, f"connbench up not up after {timeout:.0f} s:\n{up.output()}"
            time.sleep(0.2)
        yield up
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(10)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_and_check(up: Up, sig: int) -> None:
    """Send `sig` to `connbench up`; it must exit 0 and take every process and directory with it."""
    children = descendants(up.proc.pid)
    names = " ".join(" ".join(c.cmdline()[:4]) for c in children if c.is_running())
    assert "postgres" in names and "locust" in names and "serve" in names, names
    logs = up.logs_dir()
    assert logs.is_dir()
    up.proc.send_signal(sig)
    assert up.proc.wait(120) == 0, up.output()
    left = [c for c in children if running(c)]
    assert not left, f"left running: {[c.cmdline() for c in left]}"
    assert not logs.exists(), f"{logs} left behind"
    pg_dirs = re.findall(r"-D (\S+)/data", names)
    assert pg_dirs and not any(Path(d).exists() for d in pg_dirs), pg_dirs


def test_up_starts_every_runnable_target_and_sigterm_stops_everything():
    with connbench_up() as up:
        skipped = missing_reason()
        expected = {t for t, tg in TARGETS.items() if not (skipped and tg.via_pgbouncer)}
        assert set(up.targets()) == expected, up.output()
        for url in up.targets().values():
            assert httpx.get(url + "/ready", timeout=10).status_code == 200
        r = httpx.get(up.web_url + "/", timeout=10)
        assert r.status_code == 200 and "window.templateArgs" in r.text
        assert "connbench-panel-link" in r.text
        panel = httpx.get(up.web_url + "/connbench/connections", timeout=10).json()
        assert [row["target"] for row in panel["targets"]] == list(up.targets())
        stop_and_check(up, signal.SIGTERM)


PANEL_ROWS_JS = """
Array.from(document.querySelectorAll('tr')).map(tr =>
  Array.from(tr.querySelectorAll('td, th')).map(td => td.innerText.trim()))
"""


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s"
        time.sleep(0.2)


def row_for(rows: list[list[str]], target: str) -> list[str] | None:
    return next((r for r in rows if r and r[0] == target), None)


def wait_for_row(browser: Chromium, target: str, column: int, timeout: float = 60.0) -> list[str]:
    """The table row of `target` once its `column` shows a number above zero."""
    deadline = time.monotonic() + timeout
    rows: list = []
    while time.monotonic() < deadline:
        rows = browser.evaluate(PANEL_ROWS_JS) or []
        row = row_for(rows, target)
        if row and len(row) > column and row[column].isdigit() and int(row[column]) > 0:
            return row
        time.sleep(0.5)
    shot = browser.screenshot(Path(tempfile.mkdtemp(prefix="connbench-test-")) / "failed.png")
    raise AssertionError(f"no connections shown for {target} in {timeout:.0f} s (see {shot}); rows: {rows}")


def requests_by_name(up: Up) -> dict[str, int]:
    stats = httpx.get(up.web_url + "/stats/requests", timeout=10).json()["stats"]
    return {s["name"]: s["num_requests"] for s in stats}


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_forms_defaults_load_every_running_target_and_the_panel_charts_the_leak(tmp_path):
    # The leak climbs toward max_connections; the lazy pool opens its connections with the first requests.
    targets = ["leaky-asyncpg", "pool-lazy-asyncpg"]
    with connbench_up("--targets", ",".join(targets)) as up, Chromium() as browser:
        browser.open(up.web_url + "/")
        args = browser.evaluate("window.templateArgs")
        # The picker offers one class per running target, every one selected by default, and users for each.
        assert args["available_user_classes"] == sorted(targets), args["available_user_classes"]
        assert args["num_users"] == 2 * len(targets) and args["spawn_rate"] == 2 * len(targets)
        assert "Download PostgreSQL connections CSV" in json.dumps(args["extended_csv_files"])

        # A selection that cannot start is refused with its reason, in one line.
        form = [["user_count", "2"], ["spawn_rate", "2"], ["user_classes", "global-asyncpg"]]
        refused = browser.evaluate(
            f"fetch('./swarm', {{method: 'POST', body: new URLSearchParams({json.dumps(form)})}}).then(r => r.json())"
        )
        assert not refused["success"] and refused["message"].startswith("not running in this stack: global-asyncpg")

        start_with_form_defaults(browser)
        wait_until(lambda: all(requests_by_name(up).get(f"{t} /db", 0) > 0 for t in targets), timeout=60)

        # The panel's tab in Locust's UI: its table, and a chart card per running target under it.
        browser.open(up.web_url + "/?tab=connbench")
        wait_until(lambda: set(charts(browser)) == set(targets), timeout=30)

        def leak_climbed() -> bool:
            ys = charts(browser).get("leaky-asyncpg", {}).get("connections", {}).get("total", [])
            return len(ys) >= 3 and ys[-1] < ys[0] - 20  # higher on the chart: 20 px of 90 over max_connections 100

        wait_until(leak_climbed, timeout=60)
        history = httpx.get(up.web_url + "/connbench/history", timeout=10).json()
        totals = [s["targets"]["leaky-asyncpg"][0] for s in history["samples"]]
        assert history["max_connections"] == 100 and max(totals) >= totals[0] + 20, totals
        snap = httpx.get(up.web_url + "/connbench/connections", timeout=10).json()
        assert all(r["requests"] > 0 for r in snap["targets"]), snap["targets"]
        browser.screenshot(tmp_path / "locust-tab.png")

        # The panel's own page: the same charts, a table, errors by cause once the leak meets the cap.
        browser.open(up.web_url + "/connbench")
        wait_until(lambda: set(charts(browser)) == set(targets), timeout=30)
        row = wait_for_row(browser, "leaky-asyncpg", column=3)
        assert row[1] == "2", row  # Locust users: the defaults gave each target its share
        status = browser.evaluate("document.getElementById('status').innerText")
        assert "max_connections 100" in status and "running" in status, status
        assert browser.screenshot(tmp_path / "connbench-panel.png").stat().st_size > 10_000

        # The history as CSV, beside Locust's own downloads: one row per reading and target, no password.
        text = httpx.get(up.web_url + "/connbench/history.csv", timeout=10).text
        lines = text.splitlines()
        assert lines[0].startswith("time,target,connections,active,idle,sessions_opened_per_s"), lines[0]
        assert {line.split(",")[1] for line in lines[1:]} == set(targets)
        assert "password" not in text.lower() and "postgresql://" not in text

        stop_and_check(up, signal.SIGINT)


def test_up_fails_cleanly_when_the_web_port_is_taken():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.cli", "up", "--web-port", str(port)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    assert out.returncode == 1
    assert f"port {port}" in out.stderr and "Locust web UI" in out.stderr


def test_monitor_counts_each_targets_connections_and_reports_an_unreachable_database(pg):
    import psycopg

    from benchmarks.load.panel import ConnectionMonitor, table_rows

    monitor = ConnectionMonitor(pg.admin_dsn, ["pool-lazy-psycopg", "global-asyncpg"])
    try:
        with (
            psycopg.connect(pg.dsn, application_name="connbench:global-asyncpg"),
            psycopg.connect(pg.dsn, application_name="connbench:leaky-psycopg"),
            psycopg.connect(pg.dsn, application_name="connbench:probe"),  # not a target: not shown
        ):
            first = monitor.poll_once()
            second = monitor.poll_once()
        rows = {r["target"]: r for r in second["targets"]}
        # The listed targets first, in order; then any other target PostgreSQL has connections of.
        assert list(rows)[:2] == ["pool-lazy-psycopg", "global-asyncpg"] and "leaky-psycopg" in rows
        assert "probe" not in rows
        assert rows["global-asyncpg"]["total"] == 1 and rows["leaky-psycopg"]["total"] == 1
        assert rows["pool-lazy-psycopg"]["total"] == 0
        assert second["db_up"] and second["max_connections"] == 100
        assert first["sessions_per_s"] is None and second["sessions_per_s"] >= 0
        assert table_rows(second)[0]["target"].startswith("all targets")
    finally:
        monitor.close()

    down = ConnectionMonitor(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres").poll_once()
    assert down["db_up"] is False and down["error"]
    assert table_rows(down)[0]["target"].startswith("PostgreSQL unreachable")
