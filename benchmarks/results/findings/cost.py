"""What does a connection cost? Connecting per request against a pool, in latency, throughput, sessions opened
per request, and PostgreSQL's own rate with and without a new connection per transaction (pgbench -C)."""

from __future__ import annotations

import pandas as pd

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, key_number
from benchmarks.results.load import MAIN_SCENARIO, RunData
from benchmarks.results.metrics import estimate, label
from benchmarks.results.path import reference_baseline
from benchmarks.results.stats import SMALL_RATIO, Estimate, noise_verdict

PAIRS = [("per-request-asyncpg", "pool-eager-asyncpg"), ("per-request-psycopg", "pool-eager-psycopg")]


def answer(run: RunData) -> Answer | None:
    for per, pool in PAIRS:
        a, b = (estimate(run, "latency_p50_ms", MAIN_SCENARIO, t) for t in (per, pool))
        if a and b and b.value:
            spr = estimate(run, "sessions_per_request", MAIN_SCENARIO, per)
            ra, rb = (estimate(run, "rps", MAIN_SCENARIO, t) for t in (per, pool))
            sentence = (
                f"Connecting per request ({per}) answers in {a.text('ms')} at p50 against {b.text('ms')} with a "
                f"pool ({pool}): {a.value / b.value:.0f}×, with {fmt.per_request_text(spr.value if spr else None)} "
                f"new PostgreSQL sessions per request; throughput {ra.text('req/s') if ra else 'n/a'} against "
                f"{rb.text('req/s') if rb else 'n/a'}."
            )
            short = (
                f"Connecting per request: p50 {fmt.num(a.value, 'ms')} against {fmt.num(b.value, 'ms')} "
                f"with a pool ({a.value / b.value:.0f}× slower), "
                f"{fmt.per_request_text(spr.value if spr else None)} new sessions per request."
            )
            detail = sentence + ceiling_sentence(run, ra, rb) + db_cpu_sentence(run, per, pool)
            return Answer(short, detail, key_number("latency_p50_ms", MAIN_SCENARIO, per, a))
    return None


def ceiling_sentence(run: RunData, per_rps: Estimate | None, pool_rps: Estimate | None) -> str:
    """The two throughputs as shares of this machine's HTTP ceiling (wrk in the baseline): a calibration that
    carried across machines better than the rates themselves (docs/trust.md)."""
    ceiling = run.http_ceiling
    if ceiling is None or not per_rps or not pool_rps:
        return ""
    target, rps = ceiling
    return (
        f" As shares of this machine's HTTP ceiling (wrk against {target}: {fmt.num(rps, 'req/s')}): "
        f"{fmt.pct(per_rps.value / rps)} connecting per request, {fmt.pct(pool_rps.value / rps)} with the pool."
    )


def db_cpu_sentence(run: RunData, per: str, pool: str) -> str:
    """What a new session costs PostgreSQL itself: its CPU per request connecting per request against a pool,
    beside pgbench's with and without -C on the same server ('' when the run has no such figures)."""
    a, b = (estimate(run, "db_cpu_ms_per_request", MAIN_SCENARIO, t) for t in (per, pool))
    if not a or not b:
        return ""
    spr = estimate(run, "sessions_per_request", MAIN_SCENARIO, per)
    per_session = (a.value - b.value) / spr.value if spr and spr.value else None
    text = f" PostgreSQL's own CPU per request: {a.text('ms')} connecting per request, {b.text('ms')} with a pool"
    if per_session is not None:
        text += (
            f": a new scram session costs it about {fmt.num(per_session, 'ms')} of CPU, so 300 new connections "
            f"a second keep {fmt.num(per_session * 300 / 1000)} of its cores busy"
        )
    pg = reference_baseline(run.baseline) if not run.baseline.empty else run.baseline
    pg = pg[pg["tool"] == "pgbench"].set_index("mode") if len(pg) and "db_cpu_ms_per_tx" in pg else pg
    if {"pooled", "connect-per-transaction"} <= set(pg.index) and pg["db_cpu_ms_per_tx"].notna().all():
        text += (
            f" (pgbench on the same server: {fmt.num(pg.loc['connect-per-transaction', 'db_cpu_ms_per_tx'], 'ms')} "
            f"per transaction with -C, {fmt.num(pg.loc['pooled', 'db_cpu_ms_per_tx'], 'ms')} without)"
        )
    mem = estimate(run, "db_backend_mb", MAIN_SCENARIO, pool)
    if mem:
        text += f"; each of the pool's backends took {mem.text('MB')} of memory (proportional set size)"
    connect = run.baseline[(run.baseline["mode"] == "connect") & (run.baseline["rtt_ms"] == 0)]
    if "db_cpu_ms_per_tx" in connect and connect["db_cpu_ms_per_tx"].notna().any():
        by_tls = connect.groupby("tls")["db_cpu_ms_per_tx"].median()
        parts = [f"{fmt.num(v, 'ms')} {'with' if tls else 'without'} TLS" for tls, v in by_tls.items() if pd.notna(v)]
        text += f"; one pgbench client connecting per transaction: {' and '.join(parts)}"
    return text + "."


def compare(agg: pd.DataFrame, a: str, b: str, metric: str) -> str | None:
    """'<x> p50 is 14× <y> at 32 users (40 ms vs 2.7 ms)' (larger first), at the highest level both have."""
    ra, rb = agg[agg["target"] == a], agg[agg["target"] == b]
    common = sorted(set(ra["users"]) & set(rb["users"]))
    if not common:
        return None
    u = common[-1]
    x, y = ra[ra["users"] == u].iloc[0], rb[rb["users"] == u].iloc[0]
    if pd.isna(x[metric]) or pd.isna(y[metric]) or not x[metric] or not y[metric]:
        return None
    if x[metric] < y[metric]:
        x, y = y, x
    name, unit = label(metric)
    ratio = x[metric] / y[metric]
    verdict = noise_verdict(x, y, metric)
    noise = "" if verdict is None else (
        " (within noise: the 95% intervals overlap)" if verdict else " (the 95% intervals are apart)"
    )  # fmt: skip
    if not noise and ratio < SMALL_RATIO:
        noise = f" (under {SMALL_RATIO - 1:.0%}: with one repeat, not to be told from noise)"
    return (
        f"{x['target']} {name} is {fmt.ratio_text(ratio)} {y['target']}'s at {u} users "
        f"({fmt.num(x[metric], unit)} vs {fmt.num(y[metric], unit)}){noise}."
    )


def comparisons(run: RunData, agg: pd.DataFrame) -> list[str]:
    """Per driver: per request against an eager pool (p50, throughput), then PgBouncer against per request and a
    lazy pool against an eager one (p50)."""
    have = set(agg["target"])
    drivers = list(dict.fromkeys(run.summary["driver"]))
    out = []
    for d in drivers:
        a, b = f"per-request-{d}", f"pool-eager-{d}"
        if a in have and b in have:
            out += [s for metric in ("latency_p50_ms", "rps") if (s := compare(agg, a, b, metric))]
    for d in drivers:
        for a, b in ((f"pgbouncer-{d}", f"per-request-{d}"), (f"pool-lazy-{d}", f"pool-eager-{d}")):
            if a in have and b in have and (s := compare(agg, a, b, "latency_p50_ms")):
                out.append(s)
    return out


def session_sentences(ok: pd.DataFrame) -> list[str]:
    """Which targets opened a session for (about) every request, which reused theirs (the findings table's rows)."""
    spr = ok.dropna(subset=["sessions_per_request"])
    if spr.empty:
        return []
    out = []
    opening = spr[spr["sessions_per_request"] >= 0.5]
    reusing = spr[spr["sessions_per_request"] < 0.5]
    listed = {
        "Opened a new PostgreSQL session for (about) every request: ": opening,
        "Reused their sessions (fewer than one new session per two requests): ": reusing,
    }
    for head, rows in listed.items():
        if len(rows):
            items = ", ".join(f"{r.target} ({fmt.per_request_text(r.sessions_per_request)})" for r in rows.itertuples())
            out.append(head + items + ".")
    return out


def baseline_sentences(run: RunData, ok: pd.DataFrame) -> list[str]:
    """pgbench on open connections against a new connection per transaction, and the fastest clean target beside it."""
    if run.baseline.empty:
        return []
    pg = reference_baseline(run.baseline)
    pg = pg[pg["tool"] == "pgbench"].set_index("mode")
    if not {"pooled", "connect-per-transaction"} <= set(pg.index):
        return []
    out = []
    pooled, per = pg.loc["pooled"], pg.loc["connect-per-transaction"]
    if pd.notna(pooled["tps"]) and pd.notna(per["tps"]) and per["tps"]:
        text = (
            f"pgbench on the same query with {int(pooled['clients'])} clients: {fmt.num(pooled['tps'], 'tps')} on "
            f"open connections, {fmt.num(per['tps'], 'tps')} with a new connection per transaction (-C), "
            f"{fmt.ratio_text(pooled['tps'] / per['tps'])} fewer"
        )
        if pd.notna(per["connect_ms"]):
            text += f"; one connection took {fmt.num(per['connect_ms'], 'ms')} on average"
        out.append(text + ".")
    clean = ok[ok["error_rate"] == 0]
    if len(clean) and pd.notna(pooled["tps"]) and pooled["tps"]:
        best = clean.loc[clean["rps"].idxmax()]
        out.append(
            f"The fastest target without failures ({best['target']}, {fmt.num(best['rps'], 'req/s')}) served "
            f"{best['rps'] / pooled['tps']:.0%} of pgbench's rate on open connections; a target adds an HTTP "
            f"service and shares the machine's {run.cores} cores with the load generator."
        )
    return out
