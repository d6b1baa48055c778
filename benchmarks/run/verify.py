"""Verify before measuring, as TechEmpower's toolset does: a broken target is named, not measured.

Each target (started for the check unless it is a --url service) must answer GET /db with a JSON object
whose `id` and `randomNumber` are integers, and PostgreSQL must show its connections under the name the
sampler counts them by (Target.conn_key) while it serves a few requests. A target that fails gets one line
saying what was wrong; `connbench run` leaves it out (manifest `skipped_targets`), `connbench verify` exits 1.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks.load.sampler import open_monitor, poll_connections
from benchmarks.stack.procs import free_port, log_tail, stop_process
from targets.families import exit_grace_s
from targets.registry import TARGETS, Target, get_target
from targets.yours import UserTarget, running_url

SEEN_WITHIN_S = 12.0  # worker-global's every second request waits 5 s for its pool: room for two more
HELD_PROBE = "/db?work_ms=20&hold=1"  # the contract's parameters; a user's service gets plain /db
VERIFY_AT_ONCE = 4  # targets checked in parallel


def check_db(url: str, timeout: float = 10.0, path: str = "/db") -> str | None:
    """What is wrong with GET /db (`path`), or None when it answers {"id": int, "randomNumber": int}."""
    try:
        resp = httpx.get(f"{url}{path}", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"GET {url}/db failed: {type(exc).__name__}: {str(exc).strip() or 'no answer'}"
    if resp.status_code != 200:
        return f"GET /db answered HTTP {resp.status_code}: {resp.text.strip()[:120]!r}"
    try:
        body = resp.json()
    except ValueError:
        return f"GET /db answered no JSON: {resp.text.strip()[:120]!r}"
    if not isinstance(body, dict) or any(type(body.get(k)) is not int for k in ("id", "randomNumber")):
        return f'GET /db answered {resp.text.strip()[:120]}, not {{"id": <int>, "randomNumber": <int>}}'
    return None


def verify_url(target: Target, url: str, monitor_dsn: str, dbname: str) -> str | None:
    """GET /db's answer, then PostgreSQL's view: a connection counted under the target's `conn_key` while
    it serves /db back to back. A target that connects per request holds its connection for a millisecond or
    two, so pg_stat_activity is polled in a thread as fast as it answers, from before the first request, and
    connbench's own targets are asked to hold their connection a little longer (`HELD_PROBE`): worker-global
    connects only on every second request (the others wait 5 s for a connection and fail), so the first
    request's connection must be seen."""
    try:
        mon = open_monitor(monitor_dsn)
    except psycopg.Error as exc:
        return f"cannot read pg_stat_activity: {str(exc).strip().splitlines()[0]}"
    seen, stop = threading.Event(), threading.Event()

    def watch() -> None:
        with contextlib.closing(mon), contextlib.suppress(psycopg.Error):
            while not (stop.is_set() or seen.is_set()):
                if poll_connections(mon, dbname).get(target.conn_key, {}).get("total", 0):
                    seen.set()
                time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        probe = "/db" if isinstance(target, UserTarget) else HELD_PROBE
        problem = check_db(url, path=probe)
        if problem:
            return problem
        deadline = time.monotonic() + SEEN_WITHIN_S
        with httpx.Client(timeout=5.0) as client:
            while not seen.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    client.get(f"{url}{probe}")
    finally:
        stop.set()
        watcher.join(10)
    if seen.is_set():
        return None
    how = getattr(target, "recognised_by", f"application_name {target.conn_key!r}")
    hint = " (its --app-name?)" if running_url(target) else ""
    return f"PostgreSQL showed no connection to database {dbname!r} with {how}{hint} while it served /db"


def verify_target(target_id: str, pg: Any, net: Any, pooler: str, log_dir: Path) -> str | None:
    """Start the target (unless it is already running), check it, stop it; what was wrong or None."""
    from benchmarks.stack.targetproc import start_target, wait_ready

    target = get_target(target_id)
    dbname = getattr(pg, "dbname", "connbench")
    url = running_url(target)
    if url:
        return verify_url(target, url, pg.admin_dsn, dbname)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = log_dir / f"{target.id}.log"
    try:
        proc = start_target(target.id, net.dsn(target.id, pooler), port, 1, {}, log)
    except OSError as exc:
        return f"cannot start it: {exc.filename or ''} {exc.strerror}".replace("  ", " ")
    try:
        if wait_ready(url, proc, path=target.ready_path) is None:
            how = "exited" if proc.poll() is not None else f"did not answer {target.ready_path} with 200"
            return f"it {how} on start: " + log_tail(log, 3).replace("\n", " | ")
        return verify_url(target, url, pg.admin_dsn, dbname)
    finally:
        stop_process(proc, signal.SIGTERM, min(15, exit_grace_s(target)))


def verify_targets(
    target_ids: list[str], pg: Any, net: Any, pooler: str, say: Callable[[str], None] | None = None
) -> dict[str, str]:
    """Check every target (`say`: one line each, in order); {target: what was wrong} for those that failed.

    VERIFY_AT_ONCE targets at a time: most of a check is waiting (a target's start, worker-global's pool), and
    each watches only its own application_name, so checks in parallel see what checks in turn would.
    """
    failed: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="connbench-verify-") as tmp,
        ThreadPoolExecutor(VERIFY_AT_ONCE) as pool,
    ):
        problems = pool.map(lambda t: verify_target(t, pg, net, pooler, Path(tmp)), target_ids)
        for t, problem in zip(target_ids, problems, strict=True):
            if problem:
                failed[t] = f"verify failed: {problem}"
            if say is not None:
                say(f"{t}: {'FAILED: ' + problem if problem else 'ok'}")
    return failed


def choose_verified(
    target_names: list[str] | None,
    user_targets: list[UserTarget],
    db: Any,
    say: Callable[[str], None] | None = None,
    used: Callable[[str], bool] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The targets of a run, verified, and {target: why it is left out} for the others.

    The built-in targets named (all runnable ones unless the user gave targets of their own) that a cell of
    the run uses (`used`; the others are neither verified nor listed), then the user's targets; on an existing
    database (`db`) without the pgbouncer targets (connbench puts no PgBouncer in front of a database it did
    not start).
    """
    from benchmarks.stack.pgbouncer import choose_targets

    targets, skipped = choose_targets(target_names, user_targets)
    if used is not None:
        targets = [t for t in targets if used(t)]
    if db is not None:
        why = "connbench puts no PgBouncer in front of a database it did not start (--dsn)"
        skipped.update({t: why for t in targets if TARGETS[t].via_pgbouncer})
    targets = [t for t in targets if t not in skipped] + [t.id for t in user_targets]
    failed = verify_all(targets, db, say)
    skipped.update(failed)
    return [t for t in targets if t not in failed], skipped


def verify_all(targets: list[str], db: Any, say: Callable[[str], None] | None = None) -> dict[str, str]:
    """verify_targets on `db`, or on an embedded PostgreSQL (and PgBouncer) started for the check."""
    from benchmarks.stack.network import DEFAULT_POOLER, Network
    from benchmarks.stack.postgres import EmbeddedPostgres

    poolers = (DEFAULT_POOLER,) if any(TARGETS[t].via_pgbouncer for t in targets) else ()
    with contextlib.ExitStack() as stack:
        pg = db if db is not None else stack.enter_context(EmbeddedPostgres())
        net = stack.enter_context(Network(pg, 0, poolers))
        return verify_targets(targets, pg, net, DEFAULT_POOLER, say)
