"""Kind "cold-start": start a target from nothing and, as soon as /ready answers, send its first /db requests at
once from a small asyncio client (not Locust, whose start-up would hide the first requests): time to ready,
the first request's latency, the median of the first ten. One cell per users level (the concurrent clients);
[cold_start] requests sets how many requests the burst sends (50).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import statistics
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.load.sampler import Sampler, summarize_usage
from benchmarks.load.targetstats import get_stats
from benchmarks.results import summary as S
from benchmarks.run.cells import Cell
from benchmarks.run.faults import event_time
from benchmarks.run.kinds import CellContext, CellKind, CellResult, failed_start, row_header
from benchmarks.run.scenario import Scenario
from benchmarks.stack.network import DEFAULT_POOLER
from benchmarks.stack.procs import free_port, stop_process
from benchmarks.stack.targetproc import start_target, wait_ready
from targets.registry import get_target

COLD_START_S = 3.0  # the progress bar's estimate of one cell


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
    ready = event_time(events, "ready")
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


def run_cold_start_cell(cell: Cell, ctx: CellContext) -> CellResult:
    """Start the target from nothing, wait for /ready, then send its first requests at once."""
    sc, target = cell.scenario, get_target(cell.target)
    pg, net, raw, live = ctx.pg, ctx.net, ctx.raw, ctx.live
    raw.mkdir(parents=True, exist_ok=True)
    total = int(sc.cold_start.get("requests", 50))
    concurrency = cell.users
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dsn = net.dsn(target.id, cell.pooler or DEFAULT_POOLER)
    app = target.conn_key
    row = row_header(cell, target, sc.workers)
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
        return failed_start(row, raw / "target.log")
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

    sdicts = [s.as_dict() for s in samples]
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
    return CellResult(row, ts)


class ColdStart(CellKind):
    name = "cold-start"
    measures_start = True

    def seconds(self, sc: Scenario) -> float:
        return COLD_START_S

    def run(self, cell: Cell, ctx: CellContext) -> CellResult:
        return run_cold_start_cell(cell, ctx)


KIND = ColdStart()
