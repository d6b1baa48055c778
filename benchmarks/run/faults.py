"""Fault and lifecycle scenarios: the cold-start cell and the metrics of cells whose scenario has actions.

- `run_cold_start_cell` (scenario kind "cold-start"): start a target from nothing and, as soon as /ready answers,
  send its first /db requests at once from a small asyncio client (not Locust, whose start-up would hide the
  first requests): time to ready, the first request's latency, the median of the first ten.
- `action_metrics` (any load scenario with [[actions]]): from Locust's outcome counts per 100 ms (the
  locustfile's `ticks`), when failures began and ended after the action, how many there were, how long the
  target took to serve again once the database was back, and whether it serves in its last seconds.
- `shutdown_metrics` (sigterm / sigkill): the exit hook's row in shutdown_log and the seconds until PostgreSQL
  shows no connection of the target.
- `errors_with_sqlstate`: failures whose 503 body carried a given SQLSTATE (53300: too many connections).

README's "Fault scenarios" documents what each figure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.load.sampler import Sampler, open_monitor, poll_connections, summarize_usage
from benchmarks.load.targetstats import get_stats
from benchmarks.results import summary as S
from benchmarks.run.cells import Cell, CellRun
from benchmarks.run.scenario import SIGNALS
from benchmarks.stack.network import DEFAULT_POOLER, Network
from benchmarks.stack.postgres import EmbeddedPostgres
from benchmarks.stack.procs import free_port, log_tail, stop_process
from benchmarks.stack.targetproc import start_target, wait_ready
from targets.strategies import get_target
from targets.yours import is_user_target

TICK = 0.1  # seconds per bin of the locustfile's outcome counts
# Failures that only say the target no longer listens (after SIGTERM/SIGKILL): not requests it had accepted.
NOT_LISTENING = ("ConnectionRefusedError",)
RECOVERED_TAIL_S = 2.0  # "recovered" looks at the last seconds of load
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


def _event_time(events: list[tuple[float, str]], *prefixes: str) -> float | None:
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

    The fault starts at the first action (db-stop, sigterm, sigkill or a mark); "back" is when PostgreSQL
    accepted connections again (db-up), or the action itself for a mark. Times have the 100 ms resolution
    of the outcome bins (per-second `ts` rows are the fallback when the locustfile wrote no bins).
    """
    bins = bins_of(final or {})
    if not bins:  # an older locustfile: fall back to the per-second rows
        bins = [
            Bin(t0 + r["t"], max(0, (r.get("rps") or 0) - (r.get("failures") or 0)), {"?": r.get("failures") or 0})
            for r in ts
            if r.get("rps")
        ]
    fault_at = _event_time(events, "db-stop", *SIGNALS, "mark")
    if fault_at is None:  # the load never started, so no action ran
        return {}
    back_at = _event_time(events, "db-up") or fault_at
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
def shutdown_logged(pg: EmbeddedPostgres, target_id: str | None, since: float) -> bool | None:
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


def release_seconds(
    pg: EmbeddedPostgres, app: str, signalled: float, samples: list[dict[str, Any]], wait: bool = True
) -> float | None:
    """Seconds from the signal until PostgreSQL showed no connection of `app` (and never one again).

    Read from the sampler's polls (every 0.2 s); when they end with connections still open, PostgreSQL is
    polled directly for up to RELEASE_WAIT_S more (the target has exited by then).
    """
    after = [s for s in samples if s["t"] >= signalled and s["db_up"]]
    zero_since = None
    for s in after:
        n = s["connections"].get(app, {}).get("total", 0)
        if n == 0 and zero_since is None:
            zero_since = s["t"]
        elif n:
            zero_since = None
    if zero_since is not None:
        return round(zero_since - signalled, 3)
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
    pg: EmbeddedPostgres,
    target_id: str,
    events: list[tuple[float, str]],
    samples: list[Any],
) -> dict[str, Any]:
    """shutdown_logged and release_s after a sigterm/sigkill action (call once the target has exited)."""
    signalled = _event_time(events, *SIGNALS)
    if signalled is None:
        return {}
    target = get_target(target_id)
    sdicts = [{"t": s.t, "connections": s.connections, "db_up": s.db_up} for s in samples]
    # PgBouncer keeps its server connections (they carry the last client's application_name): not the target's.
    release = release_seconds(pg, target.conn_key, signalled, sdicts, wait=not target.via_pgbouncer)
    logged = shutdown_logged(pg, None if is_user_target(target) else target.id, signalled)
    return {"shutdown_logged": logged, "release_s": release}


# -- cold start ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shot:
    index: int  # order of sending
    sent: float  # epoch
    ms: float
    error: str | None


class RawHttp:
    """A minimal keep-alive HTTP/1.1 GET client on asyncio streams.

    httpx's per-request cost (several ms at 8 concurrent clients on 2 cores) would drown the few milliseconds
    a connect adds to a first request; this client costs a fraction of that.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if ":" in h)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def _error_name(status: int, body: bytes) -> str:
    try:
        return str(json.loads(body).get("error") or f"HTTP {status}")
    except (ValueError, AttributeError):
        return f"HTTP {status}"


async def first_requests(port: int, total: int, concurrency: int, timeout: float = 30.0) -> list[Shot]:
    """`concurrency` clients send `total` GET /db between them, at once; each result in sending order.

    Each client opens its HTTP connection first with GET /health (which does not touch the database), so the
    latencies are the target's, not TCP handshakes.
    """
    clients = [RawHttp("127.0.0.1", port) for _ in range(concurrency)]
    await asyncio.gather(*(c.get("/health") for c in clients))
    shots: list[Shot] = []
    indices = iter(range(total))

    async def client_loop(client: RawHttp) -> None:
        for i in indices:  # shared iterator: every index is sent once, in order
            sent = time.time()
            started = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(client.get("/db"), timeout)
                error = None if status == 200 else _error_name(status, body)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                error = type(exc).__name__
                await client.close()
            shots.append(Shot(i, sent, (time.perf_counter() - started) * 1000, error))

    try:
        await asyncio.gather(*(client_loop(c) for c in clients))
    finally:
        for c in clients:
            await c.close()
    return sorted(shots, key=lambda s: s.index)


def _percentile(sorted_ms: list[float], q: float) -> float | None:
    """Nearest-rank percentile (the value at or below which a share q of the requests fall)."""
    if not sorted_ms:
        return None
    return round(sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)], 3)


def _cold_start_timeseries(
    shots: list[Shot],
    concurrency: int,
    sdicts: list[dict[str, Any]],
    app: str,
    launch: float,
    events: list[tuple[float, str]],
) -> list[dict[str, Any]]:
    """Per-second rows from the launch (t = 0): requests completed in each second, and the sampler's polls."""
    history = []
    done = [(s.sent + s.ms / 1000, s) for s in shots]
    last = max([t for t, _ in done] + [s["t"] for s in sdicts] + [launch])
    ready = _event_time(events, "ready")
    for sec in range(math.floor(last - launch) + 1):
        lo, hi = launch + sec, launch + sec + 1
        in_sec = sorted(s.ms for t, s in done if lo <= t < hi)
        history.append(
            {
                "t": hi,  # a history row covers the second before its time, as Locust's do
                "users": concurrency if any(s.sent < hi and t >= lo for t, s in done) else 0,
                "requests": len(in_sec),
                "failures": sum(1 for t, s in done if lo <= t < hi and s.error),
                "phase": "startup" if ready is None or hi <= ready else "burst",
                "p50": _percentile(in_sec, 0.5),
                "p95": _percentile(in_sec, 0.95),
                "p99": _percentile(in_sec, 0.99),
            }
        )
    return S.per_second(history, sdicts, app, launch, events)


def run_cold_start_cell(cell: Cell, pg: EmbeddedPostgres, net: Network, raw: Path, live: CellRun) -> dict[str, Any]:
    """Start the target from nothing, wait for /ready, then send its first requests at once."""
    sc, target = cell.scenario, get_target(cell.target)
    raw.mkdir(parents=True, exist_ok=True)
    total = int(sc.cold_start.get("requests", 50))
    concurrency = cell.users
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dsn = net.dsn(target.id, cell.pooler or DEFAULT_POOLER)
    app = target.conn_key
    row: dict[str, Any] = {
        "cell_id": cell.id, "scenario": sc.name, "target": target.id, "strategy": target.strategy,
        "driver": target.driver, "users": cell.users, "repeat": cell.repeat, "workers": sc.workers,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "valid": True, "invalid_reason": "",
    }  # fmt: skip
    sampler = Sampler(pg.admin_dsn, dbname=pg.dbname)
    live.sampler = sampler
    sampler.start()
    launch = time.time()
    proc = start_target(target.id, dsn, port, sc.workers, sc.target_env, raw / "target.log")
    live.procs.append(proc)
    sampler.watch("target", proc.pid)
    events: list[tuple[float, str]] = [(launch, "launch")]
    ready = wait_ready(url, proc, path=target.ready_path)
    if ready is None:
        sampler.stop()
        live.sampler = None
        stop_process(proc, signal.SIGTERM, 10)
        last = log_tail(raw / "target.log", 3).replace("\n", " | ")
        return {**row, "valid": False, "invalid_reason": f"target failed to start: {last}"}
    events.append((ready, "ready"))
    shots = asyncio.run(first_requests(port, total, concurrency))
    burst_end = max(s.sent + s.ms / 1000 for s in shots)
    events += [(shots[0].sent, "first-request"), (burst_end, "burst-end")]
    stats = get_stats(url)
    time.sleep(0.3)  # a last poll or two after the burst
    samples = sampler.stop()
    live.sampler = None
    # 10 s: nothing is in flight after the burst; a target that has not exited by then hangs (SIGKILL: -9)
    row["target_exit"] = stop_process(proc, signal.SIGTERM, 10)
    (raw / "shots.json").write_text(json.dumps([s.__dict__ for s in shots]))
    if stats is not None:
        (raw / "stats.json").write_text(json.dumps(stats, indent=1))

    sdicts = [{"t": s.t, "connections": s.connections, "sessions": s.sessions, "db_up": s.db_up} for s in samples]
    ms = sorted(s.ms for s in shots)
    errors: dict[str, int] = {}
    for s in shots:
        if s.error:
            errors[s.error] = errors.get(s.error, 0) + 1
    failures = sum(errors.values())
    measure_s = burst_end - shots[0].sent
    usage = summarize_usage([s for s in samples if s.t >= launch], "target")
    conns = S.connection_figures(sdicts, app, launch, burst_end)
    row.update(
        measure_s=round(measure_s, 3),
        requests=len(shots),
        failures=failures,
        error_rate=S.rate(failures, len(shots)),
        rps=S.rate(len(shots), measure_s),
        latency_p50_ms=_percentile(ms, 0.5),
        latency_p90_ms=_percentile(ms, 0.9),
        latency_p95_ms=_percentile(ms, 0.95),
        latency_p99_ms=_percentile(ms, 0.99),
        latency_max_ms=round(ms[-1], 3),
        latency_mean_ms=round(statistics.fmean(ms), 3),
        errors=S.errors_json(errors),
        time_to_ready_s=round(ready - launch, 3),
        first_request_ms=round(shots[0].ms, 3),
        first10_p50_ms=round(statistics.median(s.ms for s in shots[:10]), 3),
        # Connections this process opened, from its /stats (PgBouncer targets: client connections to PgBouncer).
        sessions_opened=(stats or {}).get("connections_opened"),
        target_requests=(stats or {}).get("requests"),
        target_rss_mb=usage["rss_mb"],
        target_cpu_pct=usage["cpu_pct"],
        **conns,
    )
    row["sessions_per_request"] = S.rate(row["sessions_opened"] or 0, len(shots))
    ts = _cold_start_timeseries(shots, concurrency, sdicts, app, launch, events)
    for r in ts:
        r.update(cell_id=cell.id, scenario=sc.name, target=target.id, users_level=cell.users, repeat=cell.repeat)
    row["_timeseries"] = ts
    return row
