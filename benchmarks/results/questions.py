"""The report's opening: each question of the suite and each claim of the seed documents, answered from a run.

A registry, as ann-benchmarks keeps its metrics: question → the cells that carry it → one computed sentence,
its key number (median of the valid repeats, with the 95 % bootstrap interval when there are repeats) → the
report section whose figure shows it. An answer whose cells the run lacks says so instead of guessing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from benchmarks.results import data as R


@dataclass(frozen=True)
class Figure:
    """A cell-group's figures of one target: median and interval of a summary column over valid repeats."""

    value: float
    lo: float
    hi: float
    n: int

    def text(self, unit: str = "", fmt: Callable[[float], str] = R.num) -> str:
        if math.isnan(self.value):
            return "n/a"
        if fmt is R.num and R.in_ms(self.value, unit):  # 2 ms [1–3], not 2.0e-03 s
            return Figure(self.value * 1000, self.lo * 1000, self.hi * 1000, self.n).text("ms")
        base = fmt(self.value) + (f" {unit}" if unit else "")
        if self.n >= 2 and not math.isnan(self.lo):
            return f"{base} [{fmt(self.lo)}–{fmt(self.hi)}]"
        return base


def figure(run: R.RunData, scenario: str, target: str, column: str, valid: bool = True) -> Figure | None:
    """The valid cells of `target` in `scenario` (reference connection path): median of `column`, interval.
    `valid=False`: the cells set aside instead (their reason is the caller's to say)."""
    s = R.on_reference_path(run.summary[run.summary["valid"] == valid])
    rows = s[(s["scenario"] == scenario) & (s["target"] == target)]
    values = pd.to_numeric(rows[column], errors="coerce").dropna() if column in rows else pd.Series(dtype=float)
    if values.empty:
        return None
    lo, hi = R.bootstrap_ci(values)
    return Figure(float(values.median()), lo, hi, len(values))


def _errors(run: R.RunData, scenario: str, target: str) -> dict[str, int]:
    rows = run.summary[(run.summary["scenario"] == scenario) & (run.summary["target"] == target)]
    return R.merge_errors(e if isinstance(e, dict) else json.loads(e or "{}") for e in rows["errors"])


def pct(v: float) -> str:
    return f"{100 * v:.0f} %"


def _first(run: R.RunData, scenario: str, targets: list[str], column: str) -> tuple[str, Figure] | None:
    for t in targets:
        f = figure(run, scenario, t, column)
        if f is not None:
            return t, f
    return None


# -- the six questions and what follows them ------------------------------------------------------------
def cost(run: R.RunData) -> tuple[str, str] | None:
    for per, pool in (("per-request-asyncpg", "pool-eager-asyncpg"), ("per-request-psycopg", "pool-eager-psycopg")):
        a, b = figure(run, "steady", per, "latency_p50_ms"), figure(run, "steady", pool, "latency_p50_ms")
        if a and b and b.value:
            spr = figure(run, "steady", per, "sessions_per_request")
            ra, rb = figure(run, "steady", per, "rps"), figure(run, "steady", pool, "rps")
            sentence = (
                f"Connecting per request ({per}) answers in {a.text('ms')} at p50 against {b.text('ms')} with a "
                f"pool ({pool}): {a.value / b.value:.0f}×, with {R.per_request_text(spr.value if spr else None)} new "
                f"PostgreSQL sessions per request; throughput {ra.text('req/s') if ra else 'n/a'} against "
                f"{rb.text('req/s') if rb else 'n/a'}."
            )
            return sentence, f"p50 {a.value / b.value:.0f}× a pool's"
    return None


def shared_client(run: R.RunData) -> tuple[str, str] | None:
    parts, key = [], None
    for t in ("global-asyncpg", "edge-global-asyncpg", "edge-global-psycopg", "worker-global"):
        f, rps = figure(run, "steady", t, "error_rate"), figure(run, "steady", t, "rps")
        if f is None and rps is not None and rps.value == 0:
            parts.append(f"{t} completes no request at all (each one hangs until the request timeout)")
            continue
        # its failures come back in microseconds, so its cells can saturate Locust and be set aside
        aside = f is None
        f = f or figure(run, "steady", t, "error_rate", valid=False)
        if f is not None and f.value > 0:
            errs = ", ".join(list(_errors(run, "steady", t))[:2])
            where = (
                " in cells set aside as invalid (see the appendix: a saturated load generator sends less at once, "
                "so read this rate as a floor)"
            )
            parts.append(f"{t} fails {f.text(fmt=pct)} of requests ({errs}){where if aside else ''}")
            key = key or f"{t}: {pct(f.value)} errors" + (" (invalid cells)" if aside else "")
    restart = figure(run, "db-restart", "global-asyncpg", "recovered")
    pool = figure(run, "db-restart", "pool-eager-asyncpg", "recovery_s")
    if restart is not None and not restart.value:
        parts.append(
            "after a database restart global-asyncpg never serves again"
            + (f", while pool-eager-asyncpg recovers in {pool.text('s')}" if pool else "")
        )
    if not parts:
        return None
    users = run.summary.loc[run.summary["scenario"] == "steady", "users"]
    level = f"Under {int(users.max())} concurrent users " if len(users) else ""
    return level + "; ".join(parts) + ".", key or "global-asyncpg: no recovery"


def lazy_or_eager(run: R.RunData) -> tuple[str, str] | None:
    out, key = [], ""
    for eager, lazy in (("pool-eager-asyncpg", "pool-lazy-asyncpg"), ("prisma-connect", "prisma-global")):
        fe, fl = (figure(run, "cold-start", t, "first_request_ms") for t in (eager, lazy))
        re_, rl = (figure(run, "cold-start", t, "time_to_ready_s") for t in (eager, lazy))
        if fe and fl:
            out.append(
                f"{eager}'s first request takes {fe.text('ms')} against {fl.text('ms')} for {lazy}"
                + (f" (ready after {re_.text('s')} against {rl.text('s')})" if re_ and rl else "")
            )
            key = key or f"first request {R.num(fe.value)} vs {R.num(fl.value)} ms"
    if not out:
        return None
    return "; ".join(out) + ".", key


def leak(run: R.RunData) -> tuple[str, str] | None:
    out, key = [], None
    for t in ("leaky-asyncpg", "prisma-leaky", "leaky-psycopg"):
        peak, slots = figure(run, "conn-cap", t, "conn_peak"), figure(run, "conn-cap", t, "conn_slots")
        e53300, rate = figure(run, "conn-cap", t, "errors_53300"), figure(run, "conn-cap", t, "error_rate")
        if peak and rate:
            out.append(
                f"{t} climbs to {peak.text()} connections"
                + (f" of the {slots.text()} slots" if slots else "")
                + f" and fails {rate.text(fmt=pct)} of requests"
                + (f" ({e53300.text()} with SQLSTATE 53300, too many connections)" if e53300 and e53300.value else "")
            )
            key = key or f"{t}: {pct(rate.value)} errors at the cap"
    if not out:
        return None
    return "With max_connections 20 and 3 workers per target: " + "; ".join(out) + ".", key or ""


def pooler(run: R.RunData) -> tuple[str, str] | None:
    out, key = [], None
    pgb, lazy = figure(run, "conn-cap", "pgbouncer-asyncpg", "error_rate"), None
    for t in ("pool-lazy-asyncpg", "pool-eager-asyncpg"):
        lazy = lazy or (t, figure(run, "conn-cap", t, "error_rate"), figure(run, "conn-cap", t, "conn_wanted"))
    if pgb is not None:
        peak = figure(run, "conn-cap", "pgbouncer-asyncpg", "conn_peak")
        text = f"behind PgBouncer, 3 workers fail {pgb.text(fmt=pct)} of requests with {peak.text() if peak else '?'}"
        text += " server connections"
        if lazy and lazy[1] is not None:
            wanted = f" (they want {lazy[2].text()})" if lazy[2] else ""
            text += f", where {lazy[0]}'s own pools fail {lazy[1].text(fmt=pct)}{wanted}"
        out.append(text)
        key = f"errors at the cap: {pct(pgb.value)} with PgBouncer"
    dist = R.distance_sentences(run)
    near = [s for s in dist if "near the app" in s or "near-app" in s]
    if near:
        out.append(near[0].rstrip("."))
    if not out:
        return None
    return out[0][0].upper() + "; ".join(out)[1:] + ".", key or "see the connection path"


def shutdown(run: R.RunData) -> tuple[str, str] | None:
    out, key = [], None
    for t in ("pool-eager-asyncpg", "prisma-global"):
        logged, release = figure(run, "shutdown", t, "shutdown_logged"), figure(run, "shutdown", t, "release_s")
        lost = figure(run, "shutdown", t, "errors_after_action")
        if logged is not None:
            out.append(
                f"on SIGTERM {t} {'runs' if logged.value else 'does not run'} its exit hook"
                + (f", releases its connections in {release.text('s')}" if release else "")
                + (f" and loses {lost.text()} requests" if lost else "")
            )
            if release and not key:
                key = f"release {release.text('s')}"
    kill = figure(run, "shutdown-kill", "pool-eager-asyncpg", "errors_after_action")
    if kill is not None:
        out.append(f"on SIGKILL no hook runs and {kill.text()} requests in flight fail")
    if not out:
        return None
    return out[0][0].upper() + "; ".join(out)[1:] + ".", key or ""


def pool_size(run: R.RunData) -> tuple[str, str] | None:
    s = R.pool_size_sentences(run)
    return (s[0], "see the figure") if s else None


def capacity(run: R.RunData) -> tuple[str, str] | None:
    s = R.open_sentences(run)
    return (" ".join(s[:2]), "see the figure") if s else None


# -- the seed documents' claims -------------------------------------------------------------------------
def claim_worker(run: R.RunData) -> tuple[str, str] | None:
    g_rps, p_rps = (figure(run, "steady", t, "rps") for t in ("worker-global", "worker-per-request"))
    if g_rps is None or p_rps is None:
        return None
    g_err, p_err = (figure(run, "steady", t, "error_rate") for t in ("worker-global", "worker-per-request"))
    if g_rps.value == 0:
        broken = (
            "the module-level client (worker-global) completed no request in the measured window: once its pool's "
            "clients are stuck in other requests' I/O contexts, every request hangs until the request timeout"
        )
    else:
        errs = ", ".join(list(_errors(run, "steady", "worker-global"))[:2]) or "no error"
        broken = f"the module-level client (worker-global) fails {g_err.text(fmt=pct) if g_err else 'n/a'} ({errs})"
    verdict = (
        "holds"
        if (g_rps.value == 0 or (g_err and g_err.value >= 0.4)) and p_err and p_err.value < 0.01
        else ("does not hold as stated")
    )
    return (
        f"Under load {broken}; a client per request (worker-per-request) serves {p_rps.text('req/s')} with "
        f"{p_err.text(fmt=pct) if p_err else 'n/a'} errors: the claim {verdict} (sequentially it alternates "
        "200, 503, as the tests show).",
        f"{R.num(g_rps.value)} vs {R.num(p_rps.value)} req/s",
    )


def claim_connect(run: R.RunData) -> tuple[str, str] | None:
    c, g = (figure(run, "cold-start", t, "first_request_ms") for t in ("prisma-connect", "prisma-global"))
    if c is None or g is None:
        return None
    faster = c.value < g.value
    return (
        f"With $connect() before ready the first request takes {c.text('ms')}, without it {g.text('ms')}: "
        f"{'faster' if faster else 'not faster'} (Prisma 7 with the pg adapter opens no connection at $connect(); "
        "it starts the query engine).",
        f"{R.num(c.value)} vs {R.num(g.value)} ms",
    )


def claim_leak(run: R.RunData) -> tuple[str, str] | None:
    rate = figure(run, "conn-cap", "prisma-leaky", "error_rate")
    spr = figure(run, "steady", "prisma-per-request", "sessions_per_request")
    if rate is None and spr is None:
        return None
    parts = []
    if spr is not None:
        parts.append(f"a client per request opens {R.per_request_text(spr.value)} sessions per request")
    if rate is not None:
        parts.append(f"left undisconnected (prisma-leaky) they fill the cap: {rate.text(fmt=pct)} of requests fail")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + ".", f"{pct(rate.value)} errors" if rate else ""


def claim_one_client(run: R.RunData) -> tuple[str, str] | None:
    peak = figure(run, "steady", "prisma-global", "conn_peak")
    rate = figure(run, "steady", "prisma-global", "error_rate")
    if peak is None:
        return None
    return (
        f"One PrismaClient per process (prisma-global) holds at most {peak.text()} connections under load and fails "
        f"{rate.text(fmt=pct) if rate else 'n/a'} of requests.",
        f"{R.num(peak.value)} connections",
    )


def claim_exit_hook(run: R.RunData) -> tuple[str, str] | None:
    logged = figure(run, "shutdown", "prisma-global", "shutdown_logged")
    if logged is None:
        return None
    return (
        f"On SIGTERM prisma-global's exit hook {'reached' if logged.value else 'did not reach'} the database "
        "(Prisma 7 has no beforeExit hook: process.on('SIGTERM') does it).",
        "row written" if logged.value else "no row",
    )


@dataclass(frozen=True)
class Question:
    ask: str
    section: str  # the report section whose figure shows the answer
    answer: Callable[[R.RunData], tuple[str, str] | None]


TIME_SPLIT = "Where a request's time goes (getting a connection, the query, the rest)"
ERRORS = "Errors (when a shared client breaks)"
FAULTS = "Faults: cold start, database restart, connection cap, idle timeout, shutdown"
PATH = "The connection path: distance, TLS and where the pooler sits"
CONNECTIONS = "Connections PostgreSQL sees"

QUESTIONS = [
    Question("What does a connection cost?", TIME_SPLIT, cost),
    Question("When does a shared global client break?", ERRORS, shared_client),
    Question("Lazy or eager connect?", FAULTS, lazy_or_eager),
    Question("What does a client created per call and never closed do?", FAULTS, leak),
    Question("What does a pooler change, and where should it sit?", PATH, pooler),
    Question("What happens on shutdown?", FAULTS, shutdown),
    Question("How big should the pool be?", "How big should the pool be", pool_size),
    Question(
        "How many requests per second does each strategy serve within the SLO?",
        "Requests that arrive at a rate (open model)",
        capacity,
    ),
]

CLAIMS = [
    Question(
        "Worker demo: a Prisma client kept in a module-level variable fails every second request; "
        "a client per request fixes it",
        ERRORS,
        claim_worker,
    ),
    Question("Prisma: an explicit $connect() makes the first request fast", FAULTS, claim_connect),
    Question(
        "Prisma: a new PrismaClient per call without $disconnect() opens a new pool each time", FAULTS, claim_leak
    ),
    Question("Prisma: one PrismaClient per long-running app", CONNECTIONS, claim_one_client),
    Question("Prisma: exit hooks still reach the database on shutdown", FAULTS, claim_exit_hook),
]


def anchor(section: str) -> str:
    """The id nbconvert gives a markdown heading."""
    return "#" + section.replace(" ", "-")


def answers(run: R.RunData, registry: list[Question]) -> pd.DataFrame:
    """One row per question: the question, the computed answer (or why there is none), the key number, the link."""
    rows = []
    for q in registry:
        got = q.answer(run)
        sentence, key = got if got else ("*Not measured in this run* (its cells are missing or invalid).", "")
        rows.append({"question": q.ask, "answer": sentence, "key": key, "figure": f"[figure]({anchor(q.section)})"})
    return pd.DataFrame(rows)
