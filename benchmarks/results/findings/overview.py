"""The run as a whole: how often each cell ran, the most and least throughput without failures, who failed,
the connections PostgreSQL saw against max_connections, and how many cells were set aside."""

from __future__ import annotations

import pandas as pd

from benchmarks.results import fmt
from benchmarks.results.load import MAIN_SCENARIO, RunData
from benchmarks.results.stats import invalid_cells

NEAR_CAP = 0.8  # a peak at this share of max_connections or more "nearly reaches" it


def repeats_sentence(run: RunData) -> str:
    if run.repeats >= 2:
        return (
            f"Each {MAIN_SCENARIO} cell ran {run.repeats} times: figures are medians with 95% bootstrap intervals; "
            "a difference whose intervals overlap is within noise."
        )
    return (
        f"Each {MAIN_SCENARIO} cell ran once, so the report cannot tell a difference from noise "
        f"(on {run.cores} cores); the full profile repeats cells."
    )


def throughput_range(clean: pd.DataFrame) -> list[str]:
    if clean.empty:
        return []
    best, worst = clean.loc[clean["rps"].idxmax()], clean.loc[clean["rps"].idxmin()]
    return [
        f"Among targets without a failed request, most throughput: {best['target']}, "
        f"{fmt.num(best['rps'], 'req/s')} at {best['users']} users; least: {worst['target']}, "
        f"{fmt.num(worst['rps'], 'req/s')} at {worst['users']} users."
    ]


def failure_sentences(ok: pd.DataFrame, clean: pd.DataFrame) -> list[str]:
    failing = ok[ok["error_rate"] > 0].sort_values("error_rate", ascending=False)
    out = [
        f"{r.target} failed {r.error_rate:.1%} of its requests at {r.users} users: {r.errors}."
        for r in failing.itertuples()
    ]
    if len(clean):
        out.append("No failed request: " + ", ".join(clean["target"]) + ".")
    return out


def connections_sentence(run: RunData, ok: pd.DataFrame) -> list[str]:
    conns = ok.dropna(subset=["conn_peak"])
    if conns.empty:
        return []
    lo, hi = conns.loc[conns["conn_peak"].idxmin()], conns.loc[conns["conn_peak"].idxmax()]
    text = (
        f"Peak PostgreSQL connections range from {fmt.num(lo['conn_peak'])} ({lo['target']}) to "
        f"{fmt.num(hi['conn_peak'])} ({hi['target']})"
    )
    cap = run.max_connections(MAIN_SCENARIO)
    if cap:
        near = conns[conns["conn_peak"] >= NEAR_CAP * cap]
        text += f"; max_connections is {cap}"
        if len(near):
            text += ", reached or nearly reached by " + ", ".join(near["target"])
    return [text + "."]


def invalid_sentence(run: RunData) -> list[str]:
    bad = invalid_cells(run)
    if bad.empty:
        return []
    return [
        f"{len(bad)} of {len(run.summary)} cells are invalid and left out of the figures (listed apart, with "
        "their reason)."
    ]
