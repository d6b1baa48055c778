"""When does a shared global client break? Under concurrency, reused across request contexts (an edge runtime,
the Worker demo), and after a database restart; and the seeds' claims about one client per process."""

from __future__ import annotations

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, KeyNumber, errors_of, key_number
from benchmarks.results.load import MAIN_SCENARIO, RunData
from benchmarks.results.metrics import estimate

SHARED = ["global-asyncpg", "edge-global-asyncpg", "edge-global-psycopg", "worker-global"]
RESTART, RESTARTED, POOLED = "db-restart", "global-asyncpg", "pool-eager-asyncpg"
ASIDE = (
    " in cells set aside as invalid (see the appendix: a saturated load generator sends less at once, "
    "so read this rate as a floor)"
)


def answer(run: RunData) -> Answer | None:
    parts: list[str] = []
    fails, hangs, restart = "", "", ""  # the short answer: the first client that fails, that hangs, the restart
    key: KeyNumber | None = None  # of the first client that fails or hangs, else of the restart
    for t in SHARED:
        f, rps = estimate(run, "error_rate", MAIN_SCENARIO, t), estimate(run, "rps", MAIN_SCENARIO, t)
        if f is None and rps is not None and rps.value == 0:
            parts.append(f"{t} completes no request at all (each one hangs until the request timeout)")
            hangs = hangs or f"{t} completes none"
            key = key or key_number("rps", MAIN_SCENARIO, t, rps)
            continue
        # its failures come back in microseconds, so its cells can saturate Locust and be set aside
        aside = f is None
        f = f or estimate(run, "error_rate", MAIN_SCENARIO, t, valid=False)
        if f is not None and f.value > 0:
            errs = ", ".join(list(errors_of(run, MAIN_SCENARIO, t))[:2])
            parts.append(f"{t} fails {f.text(form=fmt.pct)} of requests ({errs}){ASIDE if aside else ''}")
            fails = fails or f"{t} fails {fmt.pct(f.value)} of requests" + (
                " (invalid cells: a floor)" if aside else ""
            )
            key = key or key_number("error_rate", MAIN_SCENARIO, t, f)
    recovered = estimate(run, "recovered", RESTART, RESTARTED)
    pool = estimate(run, "recovery_s", RESTART, POOLED)
    if recovered is not None and not recovered.value:
        parts.append(
            f"after a database restart {RESTARTED} never serves again"
            + (f", while {POOLED} recovers in {pool.text('s')}" if pool else "")
        )
        restart = f"after a database restart {RESTARTED} never serves again"
        key = key or key_number("recovered", RESTART, RESTARTED, recovered)
    if not parts:
        return None
    users = run.top_users(MAIN_SCENARIO)
    level = f"Under {users} concurrent users " if users is not None else ""
    short = "; ".join(c for c in (fails, hangs, restart) if c)
    return Answer(level + short + ".", level + "; ".join(parts) + ".", key)


def claim_worker(run: RunData) -> Answer | None:
    """The Worker demo: a client in a module-level variable fails every second request; one per request fixes it."""
    g_rps, p_rps = (estimate(run, "rps", MAIN_SCENARIO, t) for t in ("worker-global", "worker-per-request"))
    if g_rps is None or p_rps is None:
        return None
    g_err, p_err = (estimate(run, "error_rate", MAIN_SCENARIO, t) for t in ("worker-global", "worker-per-request"))
    if g_rps.value == 0:
        broken = (
            "the module-level client (worker-global) completed no request in the measured window: once its pool's "
            "clients are stuck in other requests' I/O contexts, every request hangs until the request timeout"
        )
    else:
        errs = ", ".join(list(errors_of(run, MAIN_SCENARIO, "worker-global"))[:2]) or "no error"
        broken = (
            f"the module-level client (worker-global) fails {g_err.text(form=fmt.pct) if g_err else 'n/a'} ({errs})"
        )
    holds = (g_rps.value == 0 or (g_err and g_err.value >= 0.4)) and p_err and p_err.value < 0.01
    verdict = "holds" if holds else "does not hold as stated"
    short = (
        f"{verdict.capitalize()}: worker-global served {fmt.num(g_rps.value, 'req/s')} under load, worker-per-request "
        f"{fmt.num(p_rps.value, 'req/s')} with {fmt.pct(p_err.value) if p_err else 'n/a'} errors."
    )
    return Answer(
        short,
        f"Under load {broken}; a client per request (worker-per-request) serves {p_rps.text('req/s')} with "
        f"{p_err.text(form=fmt.pct) if p_err else 'n/a'} errors: the claim {verdict} "
        "(sequentially it alternates 200, 503, as the tests show).",
    )


def claim_one_client(run: RunData) -> Answer | None:
    """Prisma: one PrismaClient per long-running app."""
    peak = estimate(run, "conn_peak", MAIN_SCENARIO, "prisma-global")
    rate = estimate(run, "error_rate", MAIN_SCENARIO, "prisma-global")
    if peak is None:
        return None
    short = (
        f"prisma-global holds at most {fmt.num(peak.value)} connections under load and fails "
        f"{fmt.pct(rate.value) if rate else 'n/a'} of requests."
    )
    return Answer(
        short,
        f"One PrismaClient per process (prisma-global) holds at most {peak.text()} connections under load and fails "
        f"{rate.text(form=fmt.pct) if rate else 'n/a'} of requests.",
    )
