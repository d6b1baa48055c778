"""Lazy or eager connect? The first request and the time to ready of a pool filled before ready against one
filled by its first queries, and the seed's claim about Prisma's explicit $connect()."""

from __future__ import annotations

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, KeyNumber, key_number
from benchmarks.results.load import RunData
from benchmarks.results.metrics import estimate

COLD = "cold-start"
PAIRS = [("pool-eager-asyncpg", "pool-lazy-asyncpg"), ("prisma-connect", "prisma-global")]


def answer(run: RunData) -> Answer | None:
    out: list[str] = []
    said: list[str] = []
    key: KeyNumber | None = None
    for eager, lazy in PAIRS:
        fe, fl = (estimate(run, "first_request_ms", COLD, t) for t in (eager, lazy))
        re_, rl = (estimate(run, "time_to_ready_s", COLD, t) for t in (eager, lazy))
        if fe and fl:
            out.append(
                f"{eager}'s first request takes {fe.text('ms')} against {fl.text('ms')} for {lazy}"
                + (f" (ready after {re_.text('s')} against {rl.text('s')})" if re_ and rl else "")
            )
            said.append(f"{eager} {fmt.num(fe.value, 'ms')} against {fmt.num(fl.value, 'ms')} for {lazy}")
            key = key or key_number("first_request_ms", COLD, eager, fe)
    if not out:
        return None
    short = "First request: " + "; ".join(said[:2]) + "."
    return Answer(short, "; ".join(out) + ".", key)


def claim_connect(run: RunData) -> Answer | None:
    """Prisma: an explicit $connect() makes the first request fast."""
    c, g = (estimate(run, "first_request_ms", COLD, t) for t in ("prisma-connect", "prisma-global"))
    if c is None or g is None:
        return None
    faster = c.value < g.value
    short = (
        f"{'Faster' if faster else 'Not faster'}: the first request takes {fmt.num(c.value, 'ms')} with $connect() "
        f"before ready, {fmt.num(g.value, 'ms')} without."
    )
    return Answer(
        short,
        f"With $connect() before ready the first request takes {c.text('ms')}, without it {g.text('ms')}: "
        f"{'faster' if faster else 'not faster'} (Prisma 7 with the pg adapter opens no connection at $connect(); "
        "it starts the query engine).",
    )
