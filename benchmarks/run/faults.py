"""Fault scenarios: the metrics of cells whose scenario has actions.

- `action_metrics` (any load scenario with [[actions]]): from Locust's outcome counts per 100 ms (the
  locustfile's `ticks`), when failures began and ended after the action, how many there were, how long the
  target took to serve again once the database was back, and whether it serves in its last seconds.
- `shutdown_metrics` (sigterm / sigkill): the exit hook's row in shutdown_log and the seconds until PostgreSQL
  shows no connection of the target.
- `errors_with_sqlstate`: failures whose 503 body carried a given SQLSTATE (53300: too many connections).
- `longest_failure_s` and `orphan_sessions` (a silent-drop middlebox in the path): how long the requests
  that failed after the idle gap hung, and the sessions PostgreSQL still holds once the target has exited.

README's "Fault scenarios" documents what each figure means.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from benchmarks.load.sampler import open_monitor, poll_connections, terminate_sessions
from benchmarks.run.cells import Cell
from benchmarks.run.scenario import SIGNALS
from benchmarks.stack.external import Database
from targets.registry import get_target
from targets.yours import is_user_target

TICK = 0.1  # seconds per bin of the locustfile's outcome counts
# Failures that only say the target no longer listens (after SIGTERM/SIGKILL): not requests it had accepted.
NOT_LISTENING = ("ConnectionRefusedError",)
RECOVERED_TAIL_S = 2.0  # "recovered" looks at the last seconds of load
# The events (timeseries.csv `event`) that start a fault, and those that end it.
FAULT_STARTS = (
    "db-stop", "terminate", *SIGNALS, "pooler-stop", "pause", "restart-pooler", "pause-pooler", "freeze", "mark",
)  # fmt: skip
FAULT_ENDS = ("db-up", "pooler-up", "resume", "thaw")
RELEASE_WAIT_S = 10.0  # after the target exited, how long to wait for PostgreSQL to drop its connections


# -- outcome bins --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bin:
    t: float  # start of the 100 ms bin (epoch seconds), by completion time
    ok: int
    failed: dict[str, int]  # error class -> count

    @property
    def failures(self) -> int:
        return sum(self.failed.values())


def bins_of(final: dict[str, Any]) -> list[Bin]:
    """The locustfile's per-100 ms outcome counts, in time order."""
    out = []
    for key, counts in (final.get("ticks") or {}).items():
        failed = {k: int(v) for k, v in counts.items() if k != "ok"}
        out.append(Bin(int(key) * TICK, int(counts.get("ok", 0)), failed))
    return sorted(out, key=lambda b: b.t)


def exited_at(final: dict[str, Any]) -> float | None:
    """When a target that exited stopped answering: the first 100 ms with a refused connection, or None."""
    return next((b.t for b in bins_of(final) if b.failed.get("ConnectionRefusedError")), None)


def errors_with_sqlstate(final: dict[str, Any], sqlstate: str, start: float | None, end: float | None) -> int:
    """Failures whose 503 body carried `sqlstate`, completed within [start, end] (the measured window)."""
    n = 0
    for key, codes in (final.get("sqlstate_ticks") or {}).items():
        t = int(key) * TICK
        if (start is None or t + TICK > start) and (end is None or t <= end):
            n += int(codes.get(sqlstate, 0))
    return n


def accepted_failures(final: dict[str, Any], signalled: float, after: list[Bin]) -> int:
    """Failed requests the target had accepted: in flight at the signal, or failed later other than refused.

    A request in flight on a connection the target then closed is re-sent by Locust's HTTP client on a new
    connection (GET is idempotent) and so fails as ConnectionRefusedError: its span, not its name, says that
    it was in flight.
    """
    spans = final.get("failure_spans_s")
    if spans is None:  # an older locustfile: refused connections cannot be told from lost requests
        return sum(n for b in after for k, n in b.failed.items() if k not in NOT_LISTENING)
    # sent is floored to 0.1 ms and the failure to 10 ms: sent before the signal, failed at or after it
    in_flight = sum(n for sent, done, _err, n in spans if sent < signalled < done + 0.01)
    later = sum(n for sent, _done, err, n in spans if sent >= signalled and err not in NOT_LISTENING)
    return in_flight + later


def longest_failure_s(final: dict[str, Any], since: float) -> float | None:
    """The longest a failed request took, among those that failed at or after `since`; None without failures."""
    spans = [done - sent for sent, done, _err, _n in final.get("failure_spans_s") or [] if done >= since]
    return round(max(spans), 3) if spans else None


def silent_drop_metrics(final: dict[str, Any], events: list[tuple[float, str]], t0: float) -> dict[str, Any]:
    """hang_s after a silent drop: the longest failure or unanswered wait from the mark after the idle gap."""
    return {"hang_s": longest_failure_s(final, event_time(events, "mark") or t0)}


def freeze_metrics(app: str, events: list[tuple[float, str]], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """release_s of a frozen target: how long PostgreSQL kept its connections while it was frozen ({} when the
    cell froze nothing). Until the first poll that showed none: a new instance started later (action
    new-instance, one at a time) connects under the same name, and a frozen process cannot reconnect."""
    frozen, thawed = event_time(events, "freeze"), event_time(events, "thaw")
    if frozen is None:
        return {}
    held = [s for s in samples if thawed is None or s["t"] < thawed]
    return {"release_s": released_after(app, frozen, held, for_good=False), **instance_metrics(events)}


def instance_metrics(events: list[tuple[float, str]]) -> dict[str, Any]:
    """instances_refused: of the new instances the cell started (`instance:` events), those PostgreSQL refused a
    connection (53300): dead at start, a request answered 53300, or a connect refused ({} when it started none)."""
    started = [name.removeprefix("instance:") for _, name in events if name.startswith("instance:")]
    if not started:
        return {}
    counts = [dict(kv.split("=") for kv in e.split(",")) if "=" in e else {} for e in started]
    refused = [
        e for e, c in zip(started, counts, strict=True)
        if e == "died:53300" or int(c.get("53300", 0)) or int(c.get("refused", 0))
    ]  # fmt: skip
    return {"instances_refused": len(refused)}


def orphan_sessions(pg: Database, app: str, wait: float = 1.0) -> int | None:
    """Sessions of `app` PostgreSQL still holds after its target exited (a closed connection's session ends
    at once; one whose FIN a middlebox dropped stays until PostgreSQL's keepalive notices), which it then ends
    so that they hold none of the next cells' slots."""
    n = None
    deadline = time.monotonic() + wait
    with contextlib.suppress(psycopg.Error), contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
        while True:
            n = poll_connections(mon, pg.dbname).get(app, {}).get("total", 0)
            if not n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if n:
            terminate_sessions(mon, app, pg.dbname)
    return n


def event_time(events: list[tuple[float, str]], *prefixes: str) -> float | None:
    return next((t for t, name in events if name.startswith(prefixes)), None)


def _success_ratio(bins: list[Bin]) -> float | None:
    ok = sum(b.ok for b in bins)
    total = ok + sum(b.failures for b in bins)
    return ok / total if total else None


def action_metrics(
    cell: Cell,
    ts: list[dict[str, Any]],
    events: list[tuple[float, str]],
    t0: float,
    final: dict[str, Any] | None = None,
    samples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """outage_s, errors_after_action, recovery_s and recovered for a cell whose scenario has actions.

    The fault starts at the first action (FAULT_STARTS); "back" is when PostgreSQL or PgBouncer accepted
    connections again, PgBouncer resumed or the target was thawed (FAULT_ENDS), else the action itself. Times have
    the 100 ms resolution of the outcome bins (per-second `ts` rows are the fallback when the locustfile wrote
    no bins).
    """
    bins = bins_of(final or {})
    if not bins:  # an older locustfile: fall back to the per-second rows
        bins = [
            Bin(t0 + r["t"], max(0, (r.get("rps") or 0) - (r.get("failures") or 0)), {"?": r.get("failures") or 0})
            for r in ts
            if r.get("rps")
        ]
    fault_at = event_time(events, *FAULT_STARTS)
    if fault_at is None:  # the load never started, so no action ran
        return {}
    back_at = event_time(events, *FAULT_ENDS) or fault_at
    killed = any(name in SIGNALS for _, name in events)
    # The last completed request (Locust's "stopped" comes up to 2 s after the load shape ended).
    end = bins[-1].t + TICK if bins else fault_at
    start_bin = math.floor(fault_at / TICK) * TICK - 1e-9  # the bin holding the action counts as after it
    after = [b for b in bins if b.t >= start_bin]
    before = [b for b in bins if b.t < start_bin]
    if killed:
        # The target is gone on purpose: what matters is whether requests it had accepted failed.
        return {
            "errors_after_action": accepted_failures(final or {}, fault_at, after),
            "outage_s": None,
            "recovery_s": None,
            "recovered": None,
        }
    failing = [b for b in after if b.failures]
    outage = round(failing[-1].t + TICK - failing[0].t, 3) if failing else 0.0
    back_bin = math.floor(back_at / TICK) * TICK - 1e-9
    first_ok = next((b for b in bins if b.t >= back_bin and b.ok), None)
    recovery = round(max(0.0, first_ok.t + TICK - back_at), 3) if first_ok else None
    tail = [b for b in after if b.t >= max(end - RECOVERED_TAIL_S, back_bin)]
    pre_ratio = _success_ratio(before)
    post_ratio = _success_ratio(tail)
    recovered = bool(post_ratio is not None and sum(b.ok for b in tail) > 0 and post_ratio >= 0.5 * (pre_ratio or 0.0))
    return {
        "outage_s": outage,
        "errors_after_action": sum(b.failures for b in after),
        "recovery_s": recovery,
        "recovered": recovered,
    }


# -- shutdown ------------------------------------------------------------------------------------------
def shutdown_logged(pg: Database, target_id: str | None, since: float) -> bool | None:
    """Did the exit hook write its shutdown_log row (at or after `since`, epoch)? None when it cannot be read.

    `target_id` None: any row (a user's service names its rows as it likes; a cell runs one target at a time).
    """
    try:
        with psycopg.connect(
            pg.superuser_dsn(pg.dbname), autocommit=True, connect_timeout=5, application_name="connbench:harness"
        ) as conn:
            row = conn.execute(
                "SELECT count(*) FROM shutdown_log WHERE (%s::text IS NULL OR target = %s)"
                " AND logged_at >= to_timestamp(%s)",
                (target_id, target_id, since - 0.5),
            ).fetchone()
    except psycopg.Error:
        return None
    return bool(row and row[0])


def released_after(app: str, since: float, samples: list[dict[str, Any]], for_good: bool = True) -> float | None:
    """Seconds from `since` until the sampler's polls showed no connection of `app` and (`for_good`) none again,
    or None."""
    zero_since = None
    for s in samples:
        if s["t"] < since or not s["db_up"]:
            continue
        n = s["connections"].get(app, {}).get("total", 0)
        if n == 0 and zero_since is None:
            zero_since = s["t"]
            if not for_good:
                break
        elif n:
            zero_since = None
    return round(zero_since - since, 3) if zero_since is not None else None


def release_seconds(
    pg: Database, app: str, signalled: float, samples: list[dict[str, Any]], wait: bool = True
) -> float | None:
    """Seconds from the signal until PostgreSQL showed no connection of `app` (and never one again).

    Read from the sampler's polls (every 0.2 s); when they end with connections still open, PostgreSQL is
    polled directly for up to RELEASE_WAIT_S more (the target has exited by then).
    """
    released = released_after(app, signalled, samples)
    if released is not None:
        return released
    if not wait:
        return None
    deadline = time.monotonic() + RELEASE_WAIT_S
    with contextlib.suppress(psycopg.Error), contextlib.closing(open_monitor(pg.admin_dsn)) as mon:
        while time.monotonic() < deadline:
            if not poll_connections(mon, pg.dbname).get(app, {}).get("total", 0):
                return round(time.time() - signalled, 3)
            time.sleep(0.05)
    return None


def shutdown_metrics(
    pg: Database,
    target_id: str,
    events: list[tuple[float, str]],
    samples: list[Any],
) -> dict[str, Any]:
    """shutdown_logged and release_s after a sigterm/sigkill action (call once the target has exited)."""
    signalled = event_time(events, *SIGNALS)
    if signalled is None:
        return {}
    target = get_target(target_id)
    sdicts = [s.as_dict() for s in samples]
    # PgBouncer keeps its server connections (they carry the last client's application_name): not the target's.
    release = release_seconds(pg, target.conn_key, signalled, sdicts, wait=not target.via_pgbouncer)
    logged = shutdown_logged(pg, None if is_user_target(target) else target.id, signalled)
    return {"shutdown_logged": logged, "release_s": release}
