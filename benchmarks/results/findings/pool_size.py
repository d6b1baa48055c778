"""How big should the pool be? Throughput against pool_max at fixed users: where it stops growing, what cores × 2
of this machine gives, and how long a request waited for its connection at the smallest pool."""

from __future__ import annotations

import pandas as pd

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, key_number
from benchmarks.results.load import RunData
from benchmarks.results.stats import PLATEAU, SMALL_RATIO, Estimate, plateau, sweep_aggregate

SCENARIO = "pool-size"


def _sentence(target: str, g: pd.DataFrame, stop: pd.Series, cores: int | None) -> str:
    g = g.sort_values("pool_max").set_index("pool_max", drop=False)
    first, best = g.iloc[0], g.loc[g["rps"].idxmax()]
    text = (
        f"{SCENARIO}, {target} at {int(first['users'])} users: throughput goes from {fmt.num(first['rps'], 'req/s')} "
        f"at pool_max {int(first['pool_max'])} to {fmt.num(stop['rps'], 'req/s')} at {int(stop['pool_max'])}, "
        f"where it stops growing (the smallest pool within {PLATEAU:.0%} of the best"
    )
    same = stop["pool_max"] == best["pool_max"]
    text += ")" if same else f", {fmt.num(best['rps'], 'req/s')} at {int(best['pool_max'])})"
    if cores and 2 * cores in g.index:
        text += f"; at cores × 2 = {2 * cores}: {fmt.num(g.loc[2 * cores, 'rps'], 'req/s')}"
    if pd.notna(first["acquire_p50_ms"]) and pd.notna(first["query_p50_ms"]):
        text += (
            f"; at pool_max {int(first['pool_max'])} a request waited {fmt.num(first['acquire_p50_ms'], 'ms')} "
            f"(p50) for its connection, its query took {fmt.num(first['query_p50_ms'], 'ms')}"
        )
    if g["repeats"].max() < 2:
        text += f" (one run per size: steps under {SMALL_RATIO - 1:.0%} cannot be told from noise)"
    return text + "."


def sentences(run: RunData) -> list[str]:
    agg = sweep_aggregate(run, SCENARIO, ["rps", "latency_p99_ms", "acquire_p50_ms", "query_p50_ms"])
    if agg.empty:
        return []
    cores = int(run.cores) if isinstance(run.cores, int | float) else None
    out = []
    for target, g in agg.groupby("target", sort=False):
        stop = plateau(g)
        if stop is not None:
            out.append(_sentence(str(target), g, stop, cores))
    return out


def answer(run: RunData) -> Answer | None:
    s = sentences(run)
    agg = sweep_aggregate(run, SCENARIO, ["rps"])
    for target, g in agg.groupby("target", sort=False):
        stop = plateau(g)
        if stop is None:
            continue
        first = g.sort_values("pool_max").iloc[0]
        short = (
            f"{target} at {int(first['users'])} users stops growing at pool_max {int(stop['pool_max'])} "
            f"({fmt.num(stop['rps'], 'req/s')}, from {fmt.num(first['rps'], 'req/s')} at pool_max "
            f"{int(first['pool_max'])})."
        )
        rps = Estimate(float(stop["rps"]), float(stop["rps_lo"]), float(stop["rps_hi"]), int(stop["repeats"]))
        return Answer(short, s[0], key_number("rps", SCENARIO, str(target), rps, f"pool_max {int(stop['pool_max'])}"))
    return None
