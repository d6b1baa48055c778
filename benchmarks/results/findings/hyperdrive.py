"""Does a pooler next to the Worker give Hyperdrive's saving? worker-per-request straight across the distance
against worker-pgbouncer, the same client per request through a PgBouncer next to the app that keeps its server
connections across the distance. Hyperdrive's two claims, checked against the run: the round trips a request
saves (it says 7 per new connection: TCP 1, TLS 3, auth 3), as the difference of the slopes of p50 against RTT,
and the latency saved (it says up to 90 %), at the largest RTT run."""

from __future__ import annotations

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, key_number
from benchmarks.results.load import RunData
from benchmarks.results.path import distance_aggregate, path_label, round_trips_per_request
from benchmarks.results.stats import Estimate

DIRECT, POOLED, NEAR_APP = "worker-per-request", "worker-pgbouncer", "near-app"
CLAIMED_ROUND_TRIPS, CLAIMED_SAVING = 7, 0.90


def answer(run: RunData) -> Answer | None:
    agg = distance_aggregate(run)
    slopes = round_trips_per_request(agg)
    if slopes.empty:
        return None
    direct = slopes[(slopes["target"] == DIRECT) & (slopes["pooler"] == "")]
    pooled = slopes[(slopes["target"] == POOLED) & (slopes["pooler"] == NEAR_APP)]
    pairs = direct.merge(pooled, on="tls", suffixes=("_direct", "_pooled"))
    if pairs.empty:
        return None
    pair = pairs.sort_values("tls", ascending=False).iloc[0]  # with TLS where the run has it, as Hyperdrive runs
    tls = bool(pair["tls"])
    saved_trips = pair["round_trips_direct"] - pair["round_trips_pooled"]
    at = agg[(agg["tls"] == tls) & agg["target"].isin([DIRECT, POOLED])]
    rtt = float(at["rtt_ms"].max())
    far = at[at["rtt_ms"] == rtt]
    p50_direct = far.loc[(far["target"] == DIRECT) & (far["pooler"] == ""), "latency_p50_ms"]
    p50_pooled = far.loc[(far["target"] == POOLED) & (far["pooler"] == NEAR_APP), "latency_p50_ms"]
    if p50_direct.empty or p50_pooled.empty:
        return None
    saving = 1 - float(p50_pooled.iloc[0]) / float(p50_direct.iloc[0])
    path = path_label(tls, "")
    short = (
        f"It saves {fmt.num(saved_trips)} round trips per request (claim: "
        f"{CLAIMED_ROUND_TRIPS}) and {fmt.pct(saving)} of p50 at {fmt.num(rtt)} ms RTT (claim: up to "
        f"{fmt.pct(CLAIMED_SAVING)})."
    )
    detail = (
        f"With {path}, {DIRECT} pays {fmt.num(pair['round_trips_direct'])} round trips per request across the "
        f"distance (the slope of p50 against RTT) and {POOLED} with PgBouncer {NEAR_APP} "
        f"{fmt.num(pair['round_trips_pooled'])}: {fmt.num(saved_trips)} saved, where Hyperdrive counts "
        f"{CLAIMED_ROUND_TRIPS} for a new connection (TCP 1, TLS 3, auth 3). "
        f"At {fmt.num(rtt)} ms RTT p50 is {fmt.num(float(p50_direct.iloc[0]))} ms direct and "
        f"{fmt.num(float(p50_pooled.iloc[0]))} ms through the pooler: {fmt.pct(saving)} less, against Hyperdrive's "
        f"'up to {fmt.pct(CLAIMED_SAVING)}' (the share grows with the RTT against the Worker's own time)."
    )
    rows = run.summary[
        run.summary["valid"]
        & (run.summary["target"] == POOLED)
        & (run.summary["pooler"].fillna("") == NEAR_APP)
        & (run.summary["rtt_ms"] == rtt)
        & (run.summary["tls"].fillna(False).astype(bool) == tls)
    ]
    estimate = Estimate.of(rows["latency_p50_ms"])
    scenario = str(rows["scenario"].iloc[0]) if len(rows) else "distance"
    key = (
        key_number("latency_p50_ms", scenario, POOLED, estimate, at=f"{fmt.num(rtt)} ms RTT, {path}, {NEAR_APP}")
        if estimate is not None
        else None
    )
    return Answer(short, detail, key)
