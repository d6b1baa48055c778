"""What does a pooler change, and where should it sit? Replicas × pool against the connection cap, PgBouncer
in front of it, and the connection path: a new connection's round trips, per request against a pool as the
distance grows, and PgBouncer next to the app against next to the database."""

from __future__ import annotations

import pandas as pd

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, KeyNumber, capitalised, key_number
from benchmarks.results.load import RunData
from benchmarks.results.metrics import estimate, first_estimate
from benchmarks.results.summary import TARGET_EXITED
from benchmarks.results.path import (
    Placement,
    connect_round_trips,
    distance_aggregate,
    path_label,
    pooler_placements,
    round_trips_per_request,
)

CAP = "conn-cap"
BOUNCER = "pgbouncer-asyncpg"
OWN_POOLS = ["pool-lazy-asyncpg", "pool-eager-asyncpg"]
POOLED = ["pool-eager", "pool-lazy"]  # the pooled Python strategies to compare per-request with, in this order
FAR = 10  # per request "loses by 10×" from this ratio to a pool's p50 on


def placement_text(p: Placement) -> str:
    return (
        f"{p.target} ({path_label(p.tls, '')}) at {fmt.num(p.rtt_ms)} ms RTT: p50 {fmt.num(p.near_db_ms)} ms with "
        f"PgBouncer next to the database, {fmt.num(p.near_app_ms)} ms next to the app: near-app saves "
        f"{fmt.num(p.saved_ms)} ms per request ({fmt.num(p.saved_ms / p.rtt_ms)} round trips)"
    )


def answer(run: RunData) -> Answer | None:
    out: list[str] = []
    said: list[str] = []
    key: KeyNumber | None = None
    pgb = estimate(run, "error_rate", CAP, BOUNCER)
    if pgb is not None:
        peak, workers = estimate(run, "conn_peak", CAP, BOUNCER), estimate(run, "workers", CAP, BOUNCER)
        who = f"{fmt.num(workers.value)} workers" if workers else "its workers"
        text = f"behind PgBouncer, {who} fail {pgb.text(form=fmt.pct)} of requests with {peak.text() if peak else '?'}"
        text += " server connections"
        own = first_estimate(run, "error_rate", CAP, OWN_POOLS)
        if own is not None:
            wanted = estimate(run, "conn_wanted", CAP, own[0])
            text += f", where {own[0]}'s own pools fail {own[1].text(form=fmt.pct)}"
            text += f" (they want {wanted.text()})" if wanted else ""
        out.append(text)
        key = key_number("error_rate", CAP, BOUNCER, pgb)
        said.append(
            f"at the cap, {who} behind PgBouncer fail {fmt.pct(pgb.value)} of requests"
            + (f" ({own[0]}'s own pools: {fmt.pct(own[1].value)})" if own is not None else "")
        )
    placements = pooler_placements(distance_aggregate(run))
    if placements:
        p = placements[0]
        out.append(placement_text(p))
        said.append(f"next to the app it saves {fmt.num(p.saved_ms)} ms per request at {fmt.num(p.rtt_ms)} ms RTT")
    if not out:
        return None
    return Answer(capitalised(said), capitalised(out), key)


def exited(run: RunData, scenario: str) -> list[str]:
    """The targets whose process exited on its own in a valid cell of `scenario` (under the connection cap)."""
    ts = run.timeseries
    mine = ts[(ts["scenario"] == scenario) & ts["event"].fillna("").str.contains(TARGET_EXITED, regex=False)]
    valid = set(run.summary.loc[run.summary["valid"], "cell_id"])
    return list(dict.fromkeys(mine.loc[mine["cell_id"].isin(valid), "target"]))


def conn_cap_sentences(run: RunData) -> list[str]:
    """The arithmetic of replicas × pool against the cap, beside what PostgreSQL showed, and the targets the cap
    took down."""
    gone = exited(run, CAP)
    down = (
        [f"{CAP}: {', '.join(gone)} exited during the load: pools that do not fit under the cap can take their "
         "replica down (an eager pool that meets 53300 at start-up fails its worker, and uvicorn then stops the "
         "others); every request after that is a refused connection."]
        if gone
        else []
    )  # fmt: skip
    rows = run.summary[(run.summary["scenario"] == CAP) & run.summary["valid"]]
    rows = rows.dropna(subset=["conn_wanted", "conn_slots"])
    if rows.empty:
        return down
    parts = []
    for target, g in rows.groupby("target", sort=False):
        r = g.median(numeric_only=True)
        verdict = "more than" if r["conn_wanted"] > r["conn_slots"] else "within"
        parts.append(
            f"{target} wants {fmt.num(r['conn_wanted'])} ({int(r['workers'])} workers × pool_max "
            f"{fmt.num(r['pool_max'])}), {verdict} the {fmt.num(r['conn_slots'])} slots; PostgreSQL showed "
            f"{fmt.num(r['conn_peak'])}"
        )
    return [f"{CAP}: " + "; ".join(parts) + "."] + down


def _pool_for(agg: pd.DataFrame, driver: str) -> str | None:
    """The pooled Python strategy to compare per-request with: pool-eager, else pool-lazy."""
    present = set(agg.loc[agg["driver"] == driver, "strategy"])
    return next((s for s in POOLED if s in present), None)


def _per_request_sentence(g: pd.DataFrame, rtps: pd.DataFrame, driver: str, tls: bool) -> str | None:
    pool = _pool_for(g, driver)
    per = g[g["strategy"] == "per-request"].set_index("rtt_ms")["latency_p50_ms"]
    if pool is None or per.empty:
        return None
    ref = g[g["strategy"] == pool].set_index("rtt_ms")["latency_p50_ms"]
    ratio = (per / ref).dropna().sort_index()
    if ratio.empty:
        return None
    worse = ratio[ratio >= FAR]
    each = ", ".join(f"{fmt.ratio_text(v)} at {fmt.num(k)} ms" for k, v in ratio.items())
    if len(worse) == len(ratio):
        verdict = f"it loses by {FAR}× or more at every RTT run (up to {fmt.num(ratio.index[-1])} ms)"
    elif len(worse):
        verdict = f"it loses by {FAR}× or more at {', '.join(fmt.num(k) for k in worse.index)} ms of RTT only"
    else:
        verdict = f"it loses by less than {FAR}× at every RTT run (up to {fmt.num(ratio.index[-1])} ms)"
    trips = rtps[(rtps["driver"] == driver) & (rtps["tls"] == tls) & (rtps["pooler"] == "")] if len(rtps) else rtps
    trips = trips.set_index("strategy")["round_trips"] if len(trips) else pd.Series(dtype=float)
    if {"per-request", pool} <= set(trips.index) and trips[pool] > 0:
        verdict += (
            f"; as the distance grows the ratio tends to that of their round trips per request, "
            f"{trips['per-request']:.1f} against {trips[pool]:.1f} "
            f"({fmt.ratio_text(trips['per-request'] / trips[pool])})"
        )
    return f"per-request-{driver} ({path_label(tls, '')}) has a p50 {each} that of {pool}-{driver}: {verdict}."


def distance_sentences(run: RunData) -> list[str]:
    """The connection-path questions in words: from which RTT does per-request lose to a pool by 10×, what a
    PgBouncer next to the app saves against one next to the database, and a connect's round trips."""
    agg = distance_aggregate(run)
    out = [
        f"A new connection ({r.path}) costs {r.measured:.1f} round trips (pgbench -C against RTT; "
        f"the protocol's count is {r.theory})."
        for r in connect_round_trips(run).itertuples()
    ]
    if agg.empty:
        return out
    rtps = round_trips_per_request(agg)
    for (driver, tls), g in agg[agg["pooler"] == ""].groupby(["driver", "tls"], sort=False):
        s = _per_request_sentence(g, rtps, str(driver), bool(tls))
        if s:
            out.append(s)
    return out + [placement_text(p) + "." for p in pooler_placements(agg)]
