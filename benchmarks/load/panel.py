"""The live connection panel of the Locust web UI: what PostgreSQL sees of each target, every second, with history.

`register(environment)` is called from the locustfile's `init` listener. When the environment has a web UI
(the master, or a standalone Locust) and CONNBENCH_ADMIN_DSN is set, it adds to the web UI:
- a "PostgreSQL connections" tab: a table refreshed with Locust's own statistics, and under it the charts
  of panel.js (per target: connections total, active and idle under max_connections, sessions opened/s);
- `/connbench`, a page of its own with the same charts and table, linked from the UI's corner;
- `/connbench/connections` (the latest reading), `/connbench/history` (the readings since the test
  started, from the last one before it) as JSON, and `/connbench/history.csv`, listed under Locust's "Download Data".
A background greenlet polls PostgreSQL once a second with the sampler's own queries (benchmarks.load.sampler, the
code `connbench run` uses): per target (application_name `connbench:<target-id>`) the connections that are
open, active and idle, and for the `connbench` database the sessions opened per second (PostgreSQL counts
sessions per database); each target's own /stats gives the sessions it opened per second. Locust's statistics
give each target's requests and its failures by cause (the error class of the target's 503 body).
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.load.sampler import open_monitor, poll_connections, poll_sessions
from targets.registry import TARGETS

ADMIN_DSN_ENV = "CONNBENCH_ADMIN_DSN"
TAB_KEY = "connbench"
TAB_TITLE = "PostgreSQL connections"
ALL_TARGETS = "all targets"
POLL_INTERVAL = 1.0
HISTORY_SAMPLES = 3600  # an hour of readings, one a second
# A reading of one target in the history, in this order; CSV_FIELDS are the CSV's columns for them.
HISTORY_FIELDS = ["total", "active", "idle", "opened_per_s", "requests"]
CSV_FIELDS = {"total": "connections", "active": "active", "idle": "idle", "opened_per_s": "sessions_opened_per_s",
              "requests": "requests"}  # fmt: skip
SCRIPT = Path(__file__).with_name("panel.js")
TABLE_STRUCTURE = [
    {"key": "target", "title": "Target"},
    {"key": "users", "title": "Locust users"},
    {"key": "requests", "title": "Requests"},
    {"key": "total", "title": "Connections"},
    {"key": "active", "title": "Active"},
    {"key": "idle", "title": "Idle"},
    {"key": "sessions", "title": "Sessions opened/s"},
    {"key": "errors", "title": "Errors by cause"},
]
COLUMNS = [c["key"] for c in TABLE_STRUCTURE[1:]]


def parse_target_urls(value: str | None) -> dict[str, str]:
    """CONNBENCH_TARGET_URLS ("id=url,id=url") as {id: url}."""
    pairs = (p.split("=", 1) for p in (value or "").split(",") if "=" in p)
    return {k.strip(): v.strip() for k, v in pairs if k.strip()}


class ConnectionMonitor:
    """Polls PostgreSQL (and each target's /stats); `snapshot()` is the latest reading, `history` the readings
    since the test started. Survives a database restart (reconnects)."""

    def __init__(
        self,
        admin_dsn: str,
        targets: list[str] | None = None,
        dbname: str = "connbench",
        users: Any = None,
        urls: dict[str, str] | None = None,
        requests: Any = None,
    ) -> None:
        self.admin_dsn = admin_dsn
        self.targets = list(targets or [])
        self.dbname = dbname
        self.users = users  # () -> {target id: running users}, from the Locust runner
        self.requests = requests  # () -> ({target id: requests}, {target id: {cause: failures}}), from Locust
        self.urls = dict(urls or {})  # target id -> URL, for the connections each target has opened (/stats)
        self.conn: psycopg.Connection | None = None
        self.max_connections: int | None = None
        self._last_sessions: tuple[float, int] | None = None
        self._last_opened: dict[str, tuple[float, int]] = {}
        self._snapshot: dict[str, Any] = self._empty()
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SAMPLES)
        self._running = False

    def _empty(self) -> dict[str, Any]:
        return {
            "database": self.dbname,
            "db_up": None,
            "error": None,
            "updated_at": None,
            "interval": POLL_INTERVAL,
            "max_connections": None,
            "targets": [{"target": t, "users": 0, "total": 0, "active": 0, "idle": 0} for t in self.targets],
            "total": {"total": 0, "active": 0, "idle": 0},
            "sessions": None,
            "sessions_per_s": None,
        }

    # -- polling ---------------------------------------------------------------------------------------
    def poll_once(self) -> dict[str, Any]:
        snap = self._empty()
        now = time.time()
        snap["updated_at"] = now
        try:
            if self.conn is None or self.conn.closed:
                self.conn = open_monitor(self.admin_dsn)
                shown = self.conn.execute("SHOW max_connections").fetchone()
                self.max_connections = int(shown[0]) if shown else None
                self._last_sessions = None
            by_app = poll_connections(self.conn, self.dbname)
            sessions = poll_sessions(self.conn, self.dbname)
        except psycopg.Error as exc:
            self.close()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            snap.update(db_up=False, error=first)
            self._snapshot = snap
            return snap
        counts = {t.id: by_app[t.conn_key] for t in TARGETS.values() if t.conn_key in by_app}
        users = self._users()
        requests, errors = self._requests()
        ids = self.targets + sorted(t for t in {*counts, *users} if t not in self.targets)
        rows: list[dict[str, Any]] = []
        for t in ids:
            figures = counts.get(t, {"total": 0, "active": 0, "idle": 0})
            rows.append({"target": t, "users": users.get(t, 0), **figures, "opened_per_s": self._opened_rate(t, now),
                         "requests": requests.get(t, 0), "errors": errors.get(t, {})})  # fmt: skip
        rate = None
        if self._last_sessions is not None and now > self._last_sessions[0]:
            rate = max(0, sessions - self._last_sessions[1]) / (now - self._last_sessions[0])
        self._last_sessions = (now, sessions)
        snap.update(
            db_up=True,
            max_connections=self.max_connections,
            targets=rows,
            total={k: sum(r[k] for r in rows) for k in ("total", "active", "idle")},
            sessions=sessions,
            sessions_per_s=rate,
        )
        self._snapshot = snap
        self.history.append(
            {
                "t": now,
                "sessions_per_s": rate,
                "targets": {r["target"]: [r[k] for k in HISTORY_FIELDS] for r in rows},
            }  # fmt: skip
        )
        return snap

    def _opened_rate(self, target: str, now: float) -> float | None:
        """Connections the target opened per second since the last poll, from its /stats (None if unknown)."""
        url = self.urls.get(target)
        if not url:
            return None
        try:
            with urllib.request.urlopen(url + "/stats", timeout=0.5) as resp:
                opened = int(json.load(resp)["connections_opened"])
        except (OSError, ValueError, KeyError, TypeError):
            self._last_opened.pop(target, None)
            return None
        last = self._last_opened.get(target)
        self._last_opened[target] = (now, opened)
        if last is None or now <= last[0]:
            return None
        return max(0, opened - last[1]) / (now - last[0])

    def _users(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in (self.users() if self.users else {}).items() if v}
        except Exception:
            return {}

    def _requests(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        try:
            return self.requests() if self.requests else ({}, {})
        except Exception:
            return {}, {}

    def snapshot(self) -> dict[str, Any]:
        return self._snapshot

    def restart_history(self) -> None:
        """A new test's history starts from the last reading before it, so a climb in its first second shows."""
        last = self.history[-1] if self.history else None
        self.history.clear()
        if last is not None:
            self.history.append(last)

    def history_json(self) -> dict[str, Any]:
        return {"max_connections": self.max_connections, "fields": HISTORY_FIELDS, "samples": list(self.history)}

    def history_csv(self) -> str:
        """The history as CSV: one row per reading and target."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["time", "target", *CSV_FIELDS.values(), "database_sessions_opened_per_s", "max_connections"])
        for sample in self.history:
            for target, values in sample["targets"].items():
                figures = dict(zip(HISTORY_FIELDS, values, strict=True))
                writer.writerow([f"{sample['t']:.3f}", target, *(_fmt(figures[k]) for k in CSV_FIELDS),
                                 _fmt(sample["sessions_per_s"]), self.max_connections])  # fmt: skip
        return out.getvalue()

    def run_forever(self, sleep: Any = time.sleep) -> None:
        """Poll every POLL_INTERVAL seconds until `stop()` (run it in a greenlet under Locust)."""
        self._running = True
        while self._running:
            started = time.monotonic()
            self.poll_once()
            sleep(max(0.05, POLL_INTERVAL - (time.monotonic() - started)))
        self.close()

    def stop(self) -> None:
        self._running = False

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


# -- presentation --------------------------------------------------------------------------------------
def causes(errors: dict[str, int]) -> str:
    """Errors by cause as one line, the most frequent first: "TooManyConnectionsError 120, PoolTimeout 4"."""
    return ", ".join(f"{cause} {n}" for cause, n in sorted(errors.items(), key=lambda kv: -kv[1]))


def table_rows(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the web UI's tab: the database's total with the sessions rate first, then one per target."""
    if snap["db_up"] is False:
        return [{"target": f"PostgreSQL unreachable: {snap['error']}", **dict.fromkeys(COLUMNS, "")}]
    rate = snap["sessions_per_s"]
    total = {
        "target": f"{ALL_TARGETS} (database {snap['database']})",
        **{k: sum(r.get(k, 0) for r in snap["targets"]) for k in ("users", "requests")},
        **snap["total"],
        "sessions": "" if rate is None else f"{rate:.1f}",
        "errors": "",
    }
    per_target = (
        {
            "target": r["target"],
            **{k: r.get(k, "") for k in COLUMNS},
            "sessions": _fmt(r.get("opened_per_s")),
            "errors": causes(r.get("errors", {})),
        }
        for r in snap["targets"]
    )
    return [total, *per_target]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>connbench: PostgreSQL connections</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 24px; color: #1b1f24; background: #fff; }
 h1 { font-size: 20px; margin: 0 0 4px; } a { color: #1565c0; }
 #status { color: #555; margin-bottom: 14px; } #status.down { color: #b00020; font-weight: 600; }
 table { border-collapse: collapse; min-width: 760px; margin-top: 18px; }
 th, td { padding: 5px 12px; border-bottom: 1px solid #e3e6ea; text-align: right; white-space: nowrap; }
 th:first-child, td:first-child { text-align: left; font-family: ui-monospace, monospace; }
 th { background: #f4f6f8; font-weight: 600; } tr.sum td { font-weight: 600; border-top: 2px solid #aab; }
 .note { color: #666; font-size: 13px; margin-top: 12px; max-width: 900px; }
</style></head><body>
<h1>PostgreSQL connections per target</h1>
<div id="status">waiting for the first reading&hellip;</div>
<div id="connbench-charts"></div>
<table><thead><tr><th>Target</th><th>Locust users</th><th>Requests</th><th>Connections</th><th>Active</th>
<th>Idle</th><th>Sessions opened/s</th><th>Errors by cause</th></tr></thead><tbody id="rows"></tbody></table>
<p class="note">Connections are counted in <code>pg_stat_activity</code> by application_name
<code>connbench:&lt;target&gt;</code> once a second; sessions opened per second per target come from the
target's own <code>/stats</code>, and for the database from <code>pg_stat_database.sessions</code>.
<a href="__CSV__">Download the history (CSV)</a> &middot; <a href="__UI__">Back to the Locust UI</a></p>
<script src="__JS__" data-base="__BASE__"></script>
</body></html>
"""

LINK = (
    '<a id="connbench-panel-link" href="{href}" style="position:fixed;right:16px;bottom:12px;z-index:2000;'
    "font:600 13px system-ui,sans-serif;background:#2e7d32;color:#fff;padding:6px 12px;border-radius:16px;"
    'text-decoration:none;box-shadow:0 1px 4px rgba(0,0,0,.3)">PostgreSQL connections</a>'
    '<script src="{js}" data-base="{base}"></script>'
)


# -- Locust integration --------------------------------------------------------------------------------
def _runner_users(environment: Any) -> dict[str, int]:
    runner = environment.runner
    if runner is None:
        return {}
    counts = getattr(runner, "reported_user_classes_count", None) or runner.user_classes_count
    by_name = {cls.__name__: cls for cls in environment.user_classes}
    by_name.update({cls.__name__: cls for cls in (getattr(environment, "available_user_classes", None) or {}).values()})
    out: dict[str, int] = {}
    for name, n in counts.items():
        cls = by_name.get(name)
        key = getattr(cls, "target_id", None) or name  # a target's closed-loop and arrival users add up
        out[key] = out.get(key, 0) + n
    return out


CATCH = re.compile(r"^CatchResponseError\(['\"]?(.*?)['\"]?\)$")


def _runner_requests(environment: Any) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Requests and failures by cause per target, from Locust's statistics (request name `<target> /db`)."""
    stats = environment.runner.stats if environment.runner is not None else None
    if stats is None:
        return {}, {}
    target_of = lambda name: name.rsplit(" ", 1)[0] if " " in name else None  # noqa: E731
    requests: dict[str, int] = {}
    for entry in stats.entries.values():
        if t := target_of(entry.name):
            requests[t] = requests.get(t, 0) + entry.num_requests
    errors: dict[str, dict[str, int]] = {}
    for err in list(stats.errors.values()):
        if t := target_of(err.name):
            cause = err.to_name().split(": ", 1)[-1]
            cause = m.group(1) if (m := CATCH.match(cause)) else cause
            errors.setdefault(t, {})[cause] = errors.get(t, {}).get(cause, 0) + err.occurrences
    return requests, errors


def register(environment: Any) -> ConnectionMonitor | None:
    """Add the panel to the environment's web UI; a no-op without a web UI or CONNBENCH_ADMIN_DSN."""
    web_ui = getattr(environment, "web_ui", None)
    admin_dsn = os.environ.get(ADMIN_DSN_ENV)
    if web_ui is None or not admin_dsn:
        return None
    app = web_ui.app
    if "connbench_panel" in app.view_functions:  # registered already (the locustfile imported twice)
        return app.config["connbench_monitor"]

    import gevent
    from flask import Response, jsonify, request, url_for

    urls = parse_target_urls(os.environ.get("CONNBENCH_TARGET_URLS"))
    dbname = os.environ.get("CONNBENCH_DB_NAME", "connbench")
    monitor = ConnectionMonitor(admin_dsn, list(urls), dbname, users=lambda: _runner_users(environment), urls=urls,
                                requests=lambda: _runner_requests(environment))  # fmt: skip
    app.config["connbench_monitor"] = monitor

    def with_locust(snap: dict[str, Any]) -> dict[str, Any]:
        runner = environment.runner
        state = getattr(runner, "state", None)
        return {**snap, "locust": {"state": state, "users": getattr(runner, "user_count", 0)}}

    def connbench_connections() -> Response:
        return jsonify(with_locust(monitor.snapshot()))

    def connbench_history() -> Response:
        return jsonify(monitor.history_json())

    def connbench_history_csv() -> Response:
        return Response(monitor.history_csv(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=connbench_connections.csv"})  # fmt: skip

    def connbench_script() -> Response:
        return Response(SCRIPT.read_text(), mimetype="text/javascript")

    def connbench_panel() -> Response:
        body = (
            PAGE.replace("__BASE__", html.escape(url_for("connbench_panel")))
            .replace("__JS__", html.escape(url_for("connbench_script")))
            .replace("__CSV__", html.escape(url_for("connbench_history_csv")))
            .replace("__UI__", html.escape(url_for("locust.index") if "locust.index" in app.view_functions else "/"))
        )
        return Response(body, mimetype="text/html")

    app.add_url_rule("/connbench/connections", "connbench_connections", connbench_connections)
    app.add_url_rule("/connbench/history", "connbench_history", connbench_history)
    app.add_url_rule("/connbench/history.csv", "connbench_history_csv", connbench_history_csv)
    app.add_url_rule("/connbench/panel.js", "connbench_script", connbench_script)
    app.add_url_rule("/connbench", "connbench_panel", connbench_panel)

    @app.after_request
    def _extend(response: Response) -> Response:
        if request.endpoint == "locust.request_stats" and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [{"key": TAB_KEY, "data": table_rows(monitor.snapshot())}]
            response.set_data(json.dumps(data))
        elif request.endpoint == "locust.index" and response.mimetype == "text/html":
            panel = html.escape(url_for("connbench_panel"))
            link = LINK.format(href=panel, js=html.escape(url_for("connbench_script")), base=panel)
            response.set_data(response.get_data(as_text=True).replace("</body>", link + "\n</body>", 1))
        return response

    web_ui.template_args["extended_tabs"] = [{"title": TAB_TITLE, "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [{"key": TAB_KEY, "structure": TABLE_STRUCTURE}]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./connbench/history.csv", "title": "Download PostgreSQL connections CSV (connbench)"}
    ]

    greenlet = gevent.spawn(monitor.run_forever, gevent.sleep)
    environment.events.test_start.add_listener(lambda **_kw: monitor.restart_history())

    def stop(**_kw: Any) -> None:
        monitor.stop()
        greenlet.kill(block=False)

    environment.events.quitting.add_listener(stop)
    return monitor
