"""The live connection panel of the Locust web UI: what PostgreSQL sees of each target, every second.

`register(environment)` is called from the locustfile's `init` listener. When the environment has a web UI
(the master, or a standalone Locust) and CONNBENCH_ADMIN_DSN is set, it adds to the web UI:
- a "PostgreSQL connections" tab (shown once a test has started, refreshed with Locust's own statistics),
- `/connbench`, a page of its own that refreshes every second, linked from the UI's corner,
- `/connbench/connections`, the same figures as JSON.
A background greenlet polls PostgreSQL once a second with the sampler's own queries (benchmarks.load.sampler, the
code `connbench run` uses): per target (application_name `connbench:<target-id>`) the connections that are
open, active and idle, and for the `connbench` database the sessions opened per second. PostgreSQL counts
sessions per database, not per application, so the rate is one figure for all targets.
"""

from __future__ import annotations

import html
import json
import os
import time
from typing import Any

import psycopg

from benchmarks.load.sampler import open_monitor, poll_connections, poll_sessions
from targets.registry import TARGETS

ADMIN_DSN_ENV = "CONNBENCH_ADMIN_DSN"
TAB_KEY = "connbench"
TAB_TITLE = "PostgreSQL connections"
ALL_TARGETS = "all targets"
POLL_INTERVAL = 1.0
TABLE_STRUCTURE = [
    {"key": "target", "title": "Target"},
    {"key": "users", "title": "Locust users"},
    {"key": "total", "title": "Connections"},
    {"key": "active", "title": "Active"},
    {"key": "idle", "title": "Idle"},
    {"key": "sessions", "title": "Sessions opened/s (database)"},
]


def parse_target_urls(value: str | None) -> dict[str, str]:
    """CONNBENCH_TARGET_URLS ("id=url,id=url") as {id: url}."""
    pairs = (p.split("=", 1) for p in (value or "").split(",") if "=" in p)
    return {k.strip(): v.strip() for k, v in pairs if k.strip()}


class ConnectionMonitor:
    """Polls PostgreSQL; `snapshot()` is the latest reading. Survives a database restart (reconnects)."""

    def __init__(
        self,
        admin_dsn: str,
        targets: list[str] | None = None,
        dbname: str = "connbench",
        users: Any = None,
    ) -> None:
        self.admin_dsn = admin_dsn
        self.targets = list(targets or [])
        self.dbname = dbname
        self.users = users  # () -> {target id: running users}, from the Locust runner
        self.conn: psycopg.Connection | None = None
        self.max_connections: int | None = None
        self._last_sessions: tuple[float, int] | None = None
        self._snapshot: dict[str, Any] = self._empty()
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
        ids = self.targets + sorted(t for t in {*counts, *users} if t not in self.targets)
        rows: list[dict[str, Any]] = []
        for t in ids:
            figures = counts.get(t, {"total": 0, "active": 0, "idle": 0})
            rows.append({"target": t, "users": users.get(t, 0), **figures})
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
        return snap

    def _users(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in (self.users() if self.users else {}).items() if v}
        except Exception:
            return {}

    def snapshot(self) -> dict[str, Any]:
        return self._snapshot

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


# -- presentation --------------------------------------------------------------------------------------
def table_rows(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the web UI's tab: the database's total with the sessions rate first, then one per target."""
    if snap["db_up"] is False:
        return [{"target": f"PostgreSQL unreachable: {snap['error']}", "users": "", "total": "", "active": "",
                 "idle": "", "sessions": ""}]  # fmt: skip
    rate = snap["sessions_per_s"]
    total = {
        "target": f"{ALL_TARGETS} (database {snap['database']})",
        "users": sum(r["users"] for r in snap["targets"]),
        **snap["total"],
        "sessions": "" if rate is None else f"{rate:.1f}",
    }
    return [total, *({**r, "sessions": ""} for r in snap["targets"])]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>connbench: PostgreSQL connections</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 24px; color: #1b1f24; background: #fff; }
 h1 { font-size: 20px; margin: 0 0 4px; } a { color: #1565c0; }
 #status { color: #555; margin-bottom: 14px; } #status.down { color: #b00020; font-weight: 600; }
 table { border-collapse: collapse; min-width: 760px; }
 th, td { padding: 5px 12px; border-bottom: 1px solid #e3e6ea; text-align: right; white-space: nowrap; }
 th:first-child, td:first-child { text-align: left; font-family: ui-monospace, monospace; }
 th { background: #f4f6f8; font-weight: 600; }
 tr.busy td { background: #f1f8ff; } tr.sum td { font-weight: 600; border-top: 2px solid #aab; }
 td.bar { width: 220px; text-align: left; }
 .bar span { display: inline-block; height: 10px; background: #2e7d32; border-radius: 2px; vertical-align: middle; }
 .bar span.idle { background: #a5d6a7; }
 .note { color: #666; font-size: 13px; margin-top: 12px; max-width: 760px; }
</style></head><body>
<h1>PostgreSQL connections per target</h1>
<div id="status">waiting for the first reading&hellip;</div>
<table><thead><tr><th>Target</th><th>Locust users</th><th>Connections</th><th>Active</th><th>Idle</th>
<th>of max_connections</th></tr></thead><tbody id="rows"></tbody></table>
<p class="note">Counted in <code>pg_stat_activity</code> by application_name <code>connbench:&lt;target&gt;</code>
once a second. Sessions opened per second come from <code>pg_stat_database.sessions</code>, which PostgreSQL keeps
per database, not per target. <a href="__UI__">Back to the Locust UI</a></p>
<script>
const URL_JSON = __JSON__;
function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; tr.appendChild(td); return td; }
function bar(td, r, max) {
  if (!max) return; const w = 220 / max;
  for (const [n, cls] of [[r.active, ""], [r.total - r.active, "idle"]]) {
    const s = document.createElement("span"); s.style.width = Math.round(n * w) + "px";
    if (cls) s.className = cls; td.appendChild(s); }
  td.appendChild(document.createTextNode(" " + Math.round(100 * r.total / max) + "%"));
}
async function refresh() {
  let d;
  try { d = await (await fetch(URL_JSON, {cache: "no-store"})).json(); }
  catch (e) { document.getElementById("status").textContent = "Locust web UI unreachable"; return; }
  const st = document.getElementById("status");
  if (d.db_up === false) { st.className = "down"; st.textContent = "PostgreSQL unreachable: " + d.error; }
  else if (d.db_up) {
    st.className = "";
    const rate = d.sessions_per_s === null ? "–" : d.sessions_per_s.toFixed(1);
    st.textContent = "database " + d.database + " · max_connections " + d.max_connections +
      " · sessions opened/s " + rate + " · Locust " + (d.locust ? d.locust.state + ", " + d.locust.users +
      " users" : "–") + " · updated " + new Date(d.updated_at * 1000).toLocaleTimeString();
  }
  const body = document.getElementById("rows"); body.replaceChildren();
  for (const r of d.targets) {
    const tr = document.createElement("tr"); if (r.total || r.users) tr.className = "busy";
    tr.dataset.target = r.target;
    cell(tr, r.target); cell(tr, r.users); cell(tr, r.total); cell(tr, r.active); cell(tr, r.idle);
    bar(cell(tr, "", "bar"), r, d.max_connections); body.appendChild(tr);
  }
  const tr = document.createElement("tr"); tr.className = "sum";
  cell(tr, "all targets"); cell(tr, d.targets.reduce((a, r) => a + r.users, 0)); cell(tr, d.total.total);
  cell(tr, d.total.active); cell(tr, d.total.idle); bar(cell(tr, "", "bar"), d.total, d.max_connections);
  body.appendChild(tr);
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""

LINK = (
    '<a id="connbench-panel-link" href="{href}" style="position:fixed;right:16px;bottom:12px;z-index:2000;'
    "font:600 13px system-ui,sans-serif;background:#2e7d32;color:#fff;padding:6px 12px;border-radius:16px;"
    'text-decoration:none;box-shadow:0 1px 4px rgba(0,0,0,.3)">PostgreSQL connections</a>'
)


# -- Locust integration --------------------------------------------------------------------------------
def _runner_users(environment: Any) -> dict[str, int]:
    runner = environment.runner
    if runner is None:
        return {}
    counts = getattr(runner, "reported_user_classes_count", None) or runner.user_classes_count
    by_name = getattr(environment, "available_user_classes", None) or {
        cls.__name__: cls for cls in environment.user_classes
    }
    out: dict[str, int] = {}
    for name, n in counts.items():
        cls = by_name.get(name)
        key = getattr(cls, "target_id", None) or name  # a target's closed-loop and arrival users add up
        out[key] = out.get(key, 0) + n
    return out


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

    targets = list(parse_target_urls(os.environ.get("CONNBENCH_TARGET_URLS")))
    dbname = os.environ.get("CONNBENCH_DB_NAME", "connbench")
    monitor = ConnectionMonitor(admin_dsn, targets, dbname, users=lambda: _runner_users(environment))
    app.config["connbench_monitor"] = monitor

    def with_locust(snap: dict[str, Any]) -> dict[str, Any]:
        runner = environment.runner
        state = getattr(runner, "state", None)
        return {**snap, "locust": {"state": state, "users": getattr(runner, "user_count", 0)}}

    def connbench_connections() -> Response:
        return jsonify(with_locust(monitor.snapshot()))

    def connbench_panel() -> Response:
        body = PAGE.replace("__JSON__", json.dumps(url_for("connbench_connections"))).replace(
            "__UI__", html.escape(url_for("locust.index") if "locust.index" in app.view_functions else "/")
        )
        return Response(body, mimetype="text/html")

    app.add_url_rule("/connbench/connections", "connbench_connections", connbench_connections)
    app.add_url_rule("/connbench", "connbench_panel", connbench_panel)

    @app.after_request
    def _extend(response: Response) -> Response:
        if request.endpoint == "locust.request_stats" and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [{"key": TAB_KEY, "data": table_rows(monitor.snapshot())}]
            response.set_data(json.dumps(data))
        elif request.endpoint == "locust.index" and response.mimetype == "text/html":
            link = LINK.format(href=html.escape(url_for("connbench_panel")))
            response.set_data(response.get_data(as_text=True).replace("</body>", link + "\n</body>", 1))
        return response

    web_ui.template_args["extended_tabs"] = [{"title": TAB_TITLE, "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [{"key": TAB_KEY, "structure": TABLE_STRUCTURE}]

    greenlet = gevent.spawn(monitor.run_forever, gevent.sleep)

    def stop(**_kw: Any) -> None:
        monitor.stop()
        greenlet.kill(block=False)

    environment.events.quitting.add_listener(stop)
    return monitor
