"""The connection path (rtt_ms, tls, pooler): which cells are a scenario's reference path, and the tables of the
scenarios that ran at two RTTs or more (latency against RTT, round trips per request and per new connection,
PgBouncer next to the database against next to the app)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.results.load import RunData

# Round trips a new connection costs by protocol (TCP handshake 1; scram: startup + SASL 3; TLS: SSLRequest 1
# + TLS 1.3 with PostgreSQL 15's HelloRetryRequest to P-256 2), beside what connbench measures.
THEORY_ROUND_TRIPS = {"trust, no TLS": 2, "scram-sha-256, no TLS": 4, "scram-sha-256, TLS": 7}
PATH_KEYS = ["scenario", "target", "strategy", "driver", "tls", "pooler", "users"]


def on_reference_path(summary: pd.DataFrame) -> pd.DataFrame:
    """Per scenario, the cells of its reference connection path: the smallest RTT, without TLS when it ran
    both, PgBouncer near the database when it ran both places. The figures per users level use these (one
    point per target and level); the connection-path figures take every path."""
    if summary.empty or "rtt_ms" not in summary:
        return summary
    rtt = summary["rtt_ms"].fillna(0)
    tls = summary["tls"].fillna(False).astype(bool)
    pooler = summary["pooler"].fillna("").replace("", "-")
    keep = (rtt == rtt.groupby(summary["scenario"]).transform("min")) & (
        tls == tls.groupby(summary["scenario"]).transform("all")
    )
    near_db = (pooler == "near-db").groupby(summary["scenario"]).transform("any")
    keep &= (pooler == "-") | (pooler == "near-db") | ~near_db
    return summary[keep]


def reference_baseline(b: pd.DataFrame) -> pd.DataFrame:
    """The baseline's throughput rows on the run's reference path (the smallest RTT, without TLS when the run
    had both), so each mode appears once; the per-RTT `connect` rows are for the round trips."""
    if b.empty or "rtt_ms" not in b:
        return b
    b = b[b["mode"] != "connect"]
    tls = b["tls"].fillna(False).astype(bool)
    first_tls = bool(tls.all())  # False when any row is without TLS
    rtt = b["rtt_ms"].fillna(0)
    return b[(rtt == rtt.min()) & (tls == first_tls)]


def path_scenarios(run: RunData) -> set[str]:
    """The scenarios that ran at two RTTs or more: the connection-path figures and sentences tell their story
    (not a swept scenario's, such as pool-size at a distance: its own figure tells it)."""
    from benchmarks.results.stats import SWEPT_SCENARIOS

    rtts = run.summary[run.summary["rtt_ms"].notna()].groupby("scenario")["rtt_ms"].nunique()
    return set(rtts[rtts >= 2].index) - set(SWEPT_SCENARIOS)


def distance_aggregate(run: RunData) -> pd.DataFrame:
    """Valid load cells of the scenarios that ran at two RTTs or more: per path key and RTT, the medians over
    repeats of p50, p99 and throughput. Empty when no scenario did."""
    s = run.summary[run.summary["valid"] & run.summary["scenario"].isin(path_scenarios(run))].copy()
    if s.empty:
        return pd.DataFrame(columns=[*PATH_KEYS, "rtt_ms", "latency_p50_ms", "latency_p99_ms", "rps"])
    s["pooler"] = s["pooler"].fillna("")
    s["tls"] = s["tls"].fillna(False).astype(bool)
    out = s.groupby([*PATH_KEYS, "rtt_ms"], sort=False)[["latency_p50_ms", "latency_p99_ms", "rps"]].median()
    return out.reset_index()


def path_label(tls: bool, pooler: str) -> str:
    return ("TLS" if tls else "no TLS") + (f", PgBouncer {pooler}" if pooler else "")


def round_trips_per_request(agg: pd.DataFrame) -> pd.DataFrame:
    """Per target and path: the slope of p50 against RTT (least squares), i.e. the round trips a request
    costs across the distance: about 1 for a pooled connection, 1 + a connect's round trips for a new one."""
    keys = [k for k in PATH_KEYS if k != "scenario"]
    rows = []
    for key, g in agg.groupby(keys, sort=False):
        g = g.dropna(subset=["latency_p50_ms"])
        if g["rtt_ms"].nunique() < 2:
            continue
        slope = np.polyfit(g["rtt_ms"].astype(float), g["latency_p50_ms"].astype(float), 1)[0]
        rows.append({**dict(zip(keys, key, strict=True)), "round_trips": slope})
    return pd.DataFrame(rows)


def connect_round_trips(run: RunData) -> pd.DataFrame:
    """baseline.csv's round trips per new connection (pgbench -C, one client), per TLS mode, with theory."""
    b = run.baseline
    if b.empty or "round_trips" not in b or b["round_trips"].isna().all():
        return pd.DataFrame(columns=["path", "tls", "measured", "theory"])
    rows = []
    for tls, g in b[(b["mode"] == "connect") & b["round_trips"].notna()].groupby("tls"):
        path = "scram-sha-256, TLS" if tls else "scram-sha-256, no TLS"
        rows.append({"path": path, "tls": bool(tls), "measured": float(g["round_trips"].iloc[0]),
                     "theory": THEORY_ROUND_TRIPS[path]})  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Placement:
    """A pgbouncer target's p50 at the largest RTT run, with PgBouncer next to the database and next to the app."""

    target: str
    tls: bool
    rtt_ms: float
    near_db_ms: float
    near_app_ms: float

    @property
    def saved_ms(self) -> float:
        return self.near_db_ms - self.near_app_ms


def pooler_placements(agg: pd.DataFrame) -> list[Placement]:
    """From distance_aggregate(): per pgbouncer target and TLS mode that ran both places at an RTT above 0."""
    out = []
    for (target, tls), g in agg[agg["pooler"] != ""].groupby(["target", "tls"], sort=False):
        p50 = g.pivot_table(index="rtt_ms", columns="pooler", values="latency_p50_ms")
        if not {"near-db", "near-app"} <= set(p50.columns):
            continue
        far = p50[p50.index > 0].dropna()
        if far.empty:
            continue
        rtt = far.index.max()
        out.append(Placement(str(target), bool(tls), float(rtt), far.loc[rtt, "near-db"], far.loc[rtt, "near-app"]))
    return out
