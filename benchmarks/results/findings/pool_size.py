"""How big should the pool be? Throughput against pool_max at fixed users: where it stops growing, what cores × 2
of this machine gives, and how long a request waited for its connection at the smallest pool; with the database
at a distance, the ceiling Little's law sets: pool_max / the time a request holds its connection."""

from __future__ import annotations

import pandas as pd

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, key_number
from benchmarks.results.load import RunData, with_params
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
            f"(p50) for its connection"
        )
        if pd.notna(first["acquire_p99_ms"]):
            text += f", {fmt.num(first['acquire_p99_ms'], 'ms')} (p99)"
        text += f", its query took {fmt.num(first['query_p50_ms'], 'ms')}"
    if g["repeats"].max() < 2:
        text += f" (one run per size: steps under {SMALL_RATIO - 1:.0%} cannot be told from noise)"
    return text + "."


def sentences(run: RunData) -> list[str]:
    agg = sweep_aggregate(run, SCENARIO, ["rps", "latency_p99_ms", "acquire_p50_ms", "acquire_p99_ms", "query_p50_ms"])
    if agg.empty:
        return distance_sentences(run)
    cores = int(run.cores) if isinstance(run.cores, int | float) else None
    out = []
    for target, g in agg.groupby("target", sort=False):
        stop = plateau(g)
        if stop is not None:
            out.append(_sentence(str(target), g, stop, cores))
    return out + distance_sentences(run)


def at_distance(run: RunData) -> pd.DataFrame:
    """Per target, RTT (> 0) and pool_max: medians over valid repeats of throughput and of the time a request
    held its connection for the query (`query_p50_ms`, the round trip included), and Little's-law ceiling:
    pool_max × 1000 / that time (requests/s)."""
    s = with_params(run.cells(SCENARIO))
    s = s[s["valid"] & (s["rtt_ms"].fillna(0) > 0)]
    cols = ["target", "rtt_ms", "pool_max", "rps", "query_p50_ms", "little_rps"]
    if s.empty or "pool_max" not in s:
        return pd.DataFrame(columns=cols)
    out = s.groupby(["target", "rtt_ms", "pool_max"], sort=False)[["rps", "query_p50_ms"]].median().reset_index()
    out["little_rps"] = out["pool_max"] * 1000 / out["query_p50_ms"]
    return out[cols]


def distance_sentences(run: RunData) -> list[str]:
    out = []
    for (target, rtt), g in at_distance(run).groupby(["target", "rtt_ms"], sort=False):
        g = g.sort_values("pool_max")
        first = g.iloc[0]
        stop = plateau(g)
        text = (
            f"{SCENARIO}, {target} at {fmt.num(rtt)} ms RTT: a request holds its connection "
            f"{fmt.num(first['query_p50_ms'], 'ms')} (p50 of its query, the round trip included), so Little's law "
            f"caps pool_max {int(first['pool_max'])} at {fmt.num(first['little_rps'], 'req/s')}; measured "
            f"{fmt.num(first['rps'], 'req/s')}"
        )
        if first["rps"] and first["rps"] < 0.9 * first["little_rps"]:  # held longer than its query
            held = first["pool_max"] * 1000 / first["rps"]
            text += f", so each request held its connection {fmt.num(held, 'ms')} (pool_max / the rate)"
        if stop is not None:
            text += f"; throughput stops growing at pool_max {int(stop['pool_max'])} ({fmt.num(stop['rps'], 'req/s')})"
            text += _formulas(g, stop, run.cores)
        out.append(text + ".")
    return out


def _formulas(g: pd.DataFrame, stop: pd.Series, cores: object) -> str:
    """The pools the CPU-based formulas give on this machine, Prisma's default (cores × 2 + 1) and HikariCP's
    (cores × 2 + effective spindles, none for a cached table), and what they carry: measured where the sweep has
    that size, else Little's law with the hold time measured at the smallest pool (capped at the plateau)."""
    if not isinstance(cores, int | float) or not cores:
        return ""
    first = g.iloc[0]
    hold_ms = first["pool_max"] * 1000 / first["rps"] if first["rps"] else None
    parts = []
    for name, size in (("Prisma's default", int(2 * cores + 1)), ("HikariCP's", int(2 * cores))):
        row = g[g["pool_max"] == size]
        if len(row):
            parts.append(f"{name} {size} carries {fmt.num(row['rps'].iloc[0], 'req/s')}")
        elif hold_ms:
            rps = min(size * 1000 / hold_ms, float(stop["rps"]))
            parts.append(f"{name} {size} about {fmt.num(rps, 'req/s')} (Little's law)")
    return f"; the CPU-based formulas for {int(cores)} cores: {', '.join(parts)}" if parts else ""


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
        detail = " ".join([s[0], *distance_sentences(run)])
        return Answer(short, detail, key_number("rps", SCENARIO, str(target), rps, f"pool_max {int(stop['pool_max'])}"))
    return None
