"""What does a client created per call and never closed do? Its connections climb to the cap and requests fail
with 53300; the settings the sentence quotes (max_connections, workers) are the conn-cap scenario's own."""

from __future__ import annotations

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, KeyNumber, capitalised, key_number
from benchmarks.results.load import MAIN_SCENARIO, RunData
from benchmarks.results.metrics import estimate

CAP = "conn-cap"
LEAKY = ["leaky-asyncpg", "prisma-leaky", "leaky-psycopg"]


def cap_settings(run: RunData) -> str:
    """'max_connections 20 and 3 workers per target', from the run's conn-cap scenario ('' when unrecorded)."""
    mc, workers = run.max_connections(CAP), run.workers(CAP)
    given = [f"max_connections {mc}" if mc else "", f"{workers} workers per target" if workers else ""]
    return " and ".join(g for g in given if g)


def answer(run: RunData) -> Answer | None:
    out, short = [], ""
    key: KeyNumber | None = None
    for t in LEAKY:
        peak, slots = estimate(run, "conn_peak", CAP, t), estimate(run, "conn_slots", CAP, t)
        e53300, rate = estimate(run, "errors_53300", CAP, t), estimate(run, "error_rate", CAP, t)
        if peak and rate:
            out.append(
                f"{t} climbs to {peak.text()} connections"
                + (f" of the {slots.text()} slots" if slots else "")
                + f" and fails {rate.text(form=fmt.pct)} of requests"
                + (f" ({e53300.text()} with SQLSTATE 53300, too many connections)" if e53300 and e53300.value else "")
            )
            key = key or key_number("conn_peak", CAP, t, peak)
            short = short or (
                f"{t} climbs to {fmt.num(peak.value)} connections, fails {fmt.pct(rate.value)} of requests"
                + (f", {fmt.num(e53300.value)} with 53300" if e53300 and e53300.value else "")
            )
    if not out:
        return None
    given = f"With {cap_settings(run)}: " if cap_settings(run) else ""
    return Answer(f"{given}{short}.", given + "; ".join(out) + ".", key)


def claim_leak(run: RunData) -> Answer | None:
    """Prisma: a new PrismaClient per call without $disconnect() opens a new pool each time."""
    rate = estimate(run, "error_rate", CAP, "prisma-leaky")
    spr = estimate(run, "sessions_per_request", MAIN_SCENARIO, "prisma-per-request")
    if rate is None and spr is None:
        return None
    parts = []
    if spr is not None:
        parts.append(f"a client per request opens {fmt.per_request_text(spr.value)} sessions per request")
    if rate is not None:
        parts.append(
            f"left undisconnected (prisma-leaky) they fill the cap: {rate.text(form=fmt.pct)} of requests fail"
        )
    said = []
    if spr is not None:
        said.append(f"{fmt.per_request_text(spr.value)} new sessions per request")
    if rate is not None:
        said.append(f"left undisconnected, {fmt.pct(rate.value)} of requests fail at the cap")
    return Answer("A client per call: " + "; ".join(said) + ".", capitalised(parts))
