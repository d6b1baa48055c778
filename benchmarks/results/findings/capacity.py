"""How many requests per second does each strategy serve within the SLO? The open model (requests due at a rate,
latency from the due time, drops counted), the capacity search, and what holding a connection during slow
work costs."""

from __future__ import annotations

import pandas as pd

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, KeyNumber
from benchmarks.results.load import RunData, first_param, read_capacity
from benchmarks.results.stats import Estimate, open_load, sweep_aggregate

SLOW = "slow-work"
HOLD = {1: "holding the connection", 0: "after releasing it"}


def _capacity_text(g: pd.DataFrame) -> str:
    """'50 req/s (asyncpg, failed at 100: p99 81 ms > 50 ms)' for one target's searches (median over repeats)."""
    text = f"{fmt.num(g['sustainable_rps'].median())} req/s ({g['driver'].iloc[0]}"
    if g["failed_at_rps"].notna().any():
        return text + f", failed at {fmt.num(g['failed_at_rps'].median())}: {g['reason'].iloc[0]})"
    return f"at least {text}, {g['reason'].iloc[0]})"  # the search stopped before a higher rate failed


def _open_text(top: pd.Series) -> str:
    text = (
        f"offered {fmt.num(top['offered_rps'])} req/s, {top['target']} completed {fmt.num(top['rps'])} req/s with "
        f"{fmt.num(top['dropped'])} dropped and {fmt.num(top['late'])} late, p99 {fmt.ms_text(top['latency_p99_ms'])} "
        "from the due time"
    )
    if pd.notna(top.get("closed_rps")):
        text += (
            f", where a closed loop of {int(top['closed_users'])} users at {fmt.num(top['closed_rps'])} req/s "
            f"reported p99 {fmt.ms_text(top['closed_p99_ms'])}"
        )
    return text


def open_sentences(run: RunData) -> list[str]:
    """One sentence per strategy from the open-model cells: what it serves within the SLO (capacity.csv), and
    at its highest offered rate what it completed, dropped and how long requests waited from when they were due,
    next to what a closed loop at about the same throughput reported."""
    cap = read_capacity(run.dir)
    arr = open_load(run)
    out = []
    for strategy in dict.fromkeys([*cap["strategy"], *arr["strategy"]]):
        parts = []
        mine = cap[cap["strategy"] == strategy]
        if len(mine):
            served = " and ".join(_capacity_text(g) for _, g in mine.groupby("target", sort=False))
            parts.append(f"serves with p99 within {fmt.num(mine['slo_ms'].iloc[0])} ms of the due time {served}")
        rows = arr[arr["strategy"] == strategy]
        if len(rows):
            parts.append(_open_text(rows.loc[rows["offered_rps"].idxmax()]))
        out.append(f"{strategy}: " + "; ".join(parts) + ".")
    return out


def answer(run: RunData) -> Answer | None:
    s = open_sentences(run)
    if not s:
        return None
    cap = read_capacity(run.dir)
    served = []
    for strategy, g in list(cap.groupby("strategy", sort=False))[:2]:
        bound = "" if g["failed_at_rps"].notna().any() else "at least "
        served.append(f"{strategy} {bound}{fmt.num(g['sustainable_rps'].median(), 'req/s')}")
    if not served:  # arrival cells only: what the first strategy completed at its highest offered rate
        return Answer(s[0], " ".join(s[:2]))
    slo = fmt.num(cap["slo_ms"].iloc[0], "ms")
    first = cap[cap["target"] == cap["target"].iloc[0]]
    sustained = Estimate.of(first["sustainable_rps"])
    target = str(first["target"].iloc[0])
    key = KeyNumber("sustainable_rps", "req/s", "capacity", target, sustained) if sustained else None
    return Answer(f"Within a p99 of {slo}: " + ", ".join(served) + ".", " ".join(s[:2]), key)


def slow_work_sentences(run: RunData) -> list[str]:
    """What each target served holding its connection during the slow work and after releasing it."""
    agg = sweep_aggregate(run, SLOW, ["rps", "error_rate", "latency_p99_ms", "acquire_p99_ms"])
    if agg.empty:
        return []
    parts = []
    for target, g in agg.groupby("target", sort=False):
        said = []
        for hold, name in HOLD.items():
            r = g[g["hold"] == hold]
            if r.empty:
                continue
            r = r.iloc[0]
            served = r["rps"] * (1 - (r["error_rate"] if pd.notna(r["error_rate"]) else 0))
            failed = (
                f"{r['error_rate']:.0%} failed: {fmt.errors_text(r['errors'])}" if r["error_rate"] else "none failed"
            )
            said.append(f"{fmt.num(served, 'req/s')} {name} ({failed})")
        if said:
            parts.append(f"{target} served " + " and ".join(said))
    if not parts:
        return []
    work = first_param(run, SLOW, "work_ms")
    what = f"{fmt.num(work)} ms of slow work per request" if work is not None else "slow work per request"
    return [f"{SLOW} ({what}): " + "; ".join(parts) + "."]
