"""The framework families' questions, in their users' words, answered from the steady scenario: SQLAlchemy's
NullPool or QueuePool behind PgBouncer, what pool_pre_ping costs, Django's CONN_MAX_AGE=0, persistent
connections or its psycopg pool (5.1+), and node-postgres's Pool, a pg.Client per request or postgres.js.
Each compares the family's own targets at the same load level: p50, throughput and the PostgreSQL sessions
opened per request."""

from __future__ import annotations

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, key_number
from benchmarks.results.load import MAIN_SCENARIO, RunData
from benchmarks.results.metrics import estimate
from benchmarks.results.stats import Estimate

FRAMEWORK_FAMILIES = ["sqlalchemy", "django", "node"]  # the families these answers read (families.png too)


def _steady(run: RunData, targets: list[str]) -> dict[str, tuple[Estimate, Estimate, Estimate | None]] | None:
    """(p50, req/s, sessions per request) of each target in the steady scenario; None when one lacks them."""
    out = {}
    for t in targets:
        p50, rps = estimate(run, "latency_p50_ms", MAIN_SCENARIO, t), estimate(run, "rps", MAIN_SCENARIO, t)
        if p50 is None or rps is None:
            return None
        out[t] = (p50, rps, estimate(run, "sessions_per_request", MAIN_SCENARIO, t))
    return out


def _sessions(e: Estimate | None) -> str:
    return fmt.per_request_text(e.value if e else None)


def _ratio(a: Estimate, b: Estimate) -> str:
    return fmt.ratio_text(a.value / b.value) if b.value else "n/a"


SA_NULL_PGB, SA_QUEUE_PGB = "sqlalchemy-null-pgbouncer", "sqlalchemy-queue-pgbouncer"
SA_NULL, SA_QUEUE, SA_PRE_PING = "sqlalchemy-null", "sqlalchemy-queue", "sqlalchemy-pre-ping"


def sqlalchemy(run: RunData) -> Answer | None:
    """NullPool against QueuePool through PgBouncer (the question of sqlalchemy#12801), and both direct."""
    got = _steady(run, [SA_NULL_PGB, SA_QUEUE_PGB])
    if got is None:
        return None
    (np50, nrps, _), (qp50, qrps, _) = got[SA_NULL_PGB], got[SA_QUEUE_PGB]
    short = (
        f"NullPool answers in {fmt.num(np50.value, 'ms')} at p50 against "
        f"{fmt.num(qp50.value, 'ms')} with QueuePool, {fmt.num(nrps.value, 'req/s')} against "
        f"{fmt.num(qrps.value, 'req/s')}."
    )
    detail = (
        f"Through PgBouncer (transaction mode) {SA_NULL_PGB} answers in {np50.text('ms')} at p50 and serves "
        f"{nrps.text('req/s')}; {SA_QUEUE_PGB}, an application pool in front of the pooler, {qp50.text('ms')} and "
        f"{qrps.text('req/s')} (p50 {_ratio(np50, qp50)} QueuePool's)."
    )
    direct = _steady(run, [SA_NULL, SA_QUEUE])
    if direct:
        (dn50, dnrps, dnspr), (dq50, dqrps, dqspr) = direct[SA_NULL], direct[SA_QUEUE]
        detail += (
            f" Straight to PostgreSQL, NullPool answers in {dn50.text('ms')} ({dnrps.text('req/s')}) opening "
            f"{_sessions(dnspr)} sessions per request, QueuePool in {dq50.text('ms')} ({dqrps.text('req/s')}) "
            f"opening {_sessions(dqspr)}: the pooler takes the connection cost NullPool would pay."
        )
    return Answer(short, detail, key_number("latency_p50_ms", MAIN_SCENARIO, SA_NULL_PGB, np50))


def pre_ping(run: RunData) -> Answer | None:
    """QueuePool with pool_pre_ping=True against without: the ping is one more round trip per checkout."""
    got = _steady(run, [SA_PRE_PING, SA_QUEUE])
    if got is None:
        return None
    (pp50, pprps, _), (q50, qrps, _) = got[SA_PRE_PING], got[SA_QUEUE]
    added = pp50.value - q50.value
    short = (
        f"It adds {fmt.num(added, 'ms')} at p50 ({fmt.num(pp50.value, 'ms')} against "
        f"{fmt.num(q50.value, 'ms')}), {fmt.num(pprps.value, 'req/s')} against "
        f"{fmt.num(qrps.value, 'req/s')} without it."
    )
    detail = (
        f"{SA_PRE_PING} (QueuePool with pool_pre_ping=True) answers in {pp50.text('ms')} at p50 and serves "
        f"{pprps.text('req/s')}; {SA_QUEUE} without the ping {q50.text('ms')} and {qrps.text('req/s')}. The ping is "
        f"one more statement and round trip on every checkout, so its cost grows with the distance to the "
        f"database (the distance scenario)."
    )
    return Answer(short, detail, key_number("latency_p50_ms", MAIN_SCENARIO, SA_PRE_PING, pp50))


DJ_ZERO, DJ_PERSISTENT, DJ_POOL, DJ_ZERO_PGB = (
    "django-per-request",
    "django-persistent",
    "django-pool",
    "django-per-request-pgbouncer",
)


def django(run: RunData) -> Answer | None:
    """CONN_MAX_AGE=0 (Django's default), persistent connections, and the native psycopg pool."""
    got = _steady(run, [DJ_ZERO, DJ_PERSISTENT, DJ_POOL])
    if got is None:
        return None
    (z50, zrps, zspr), (p50, prps, pspr), (o50, orps, ospr) = got[DJ_ZERO], got[DJ_PERSISTENT], got[DJ_POOL]
    short = (
        f"Django's pool serves {fmt.num(orps.value, 'req/s')}, persistent connections "
        f"{fmt.num(prps.value, 'req/s')}, CONN_MAX_AGE=0 {fmt.num(zrps.value, 'req/s')} opening "
        f"{_sessions(zspr)} sessions per request."
    )
    detail = (
        f"{DJ_POOL} (OPTIONS pool, Django 5.1+) serves {orps.text('req/s')} at p50 {o50.text('ms')} (new "
        f"sessions per request: {_sessions(ospr)}); {DJ_PERSISTENT} (CONN_MAX_AGE > 0, health checks) "
        f"{prps.text('req/s')} at {p50.text('ms')} ({_sessions(pspr)}); {DJ_ZERO} (CONN_MAX_AGE=0, the "
        f"default) {zrps.text('req/s')} at {z50.text('ms')}, a new session for each request "
        f"({_sessions(zspr)}; the pool serves {_ratio(orps, zrps)} its rate)."
    )
    pgb = _steady(run, [DJ_ZERO_PGB])
    if pgb:
        b50, brps, _ = pgb[DJ_ZERO_PGB]
        detail += f" CONN_MAX_AGE=0 through PgBouncer: {brps.text('req/s')} at {b50.text('ms')}."
    return Answer(short, detail, key_number("rps", MAIN_SCENARIO, DJ_POOL, orps))


PG_POOL, PG_CLIENT, POSTGRES_JS = "node-pg-pool", "node-pg-client", "node-postgres-js"


def node(run: RunData) -> Answer | None:
    """node-postgres's module-level Pool, a pg.Client per request, and postgres.js."""
    got = _steady(run, [PG_POOL, PG_CLIENT, POSTGRES_JS])
    if got is None:
        return None
    (o50, orps, ospr), (c50, crps, cspr), (j50, jrps, jspr) = got[PG_POOL], got[PG_CLIENT], got[POSTGRES_JS]
    short = (
        f"postgres.js {fmt.num(jrps.value, 'req/s')}, a pg.Pool {fmt.num(orps.value, 'req/s')}, a "
        f"pg.Client per request {fmt.num(crps.value, 'req/s')} (p50 {fmt.num(c50.value, 'ms')}, "
        f"{_sessions(cspr)} sessions per request)."
    )
    detail = (
        f"{POSTGRES_JS} (a module-level postgres() client) serves {jrps.text('req/s')} at p50 {j50.text('ms')} (new "
        f"sessions per request: {_sessions(jspr)}); {PG_POOL} (a module-level pg.Pool) {orps.text('req/s')} at "
        f"{o50.text('ms')} ({_sessions(ospr)}); {PG_CLIENT} (connect() and end() per request) "
        f"{crps.text('req/s')} at {c50.text('ms')} ({_sessions(cspr)}): p50 {_ratio(c50, o50)} the Pool's."
    )
    return Answer(short, detail, key_number("latency_p50_ms", MAIN_SCENARIO, PG_CLIENT, c50))
