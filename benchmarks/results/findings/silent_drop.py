"""Which settings survive a connection that dies silently? The silent-drop scenario: a middlebox forgets
connections idle past its limit and drops their packets without a word. Per target, with its library's defaults
and with each combination of settings swept (an idle limit, TCP keepalives, tcp_user_timeout): the requests that
failed or were still unanswered after the idle gap, the longest of them, the first good request after the gap,
and the sessions PostgreSQL was left holding; and what each defence costs: an idle limit's reconnect after the gap (silent-drop cells),
pool_pre_ping's latency and database CPU per request (steady cells of sqlalchemy-pre-ping against
sqlalchemy-queue)."""

from __future__ import annotations

import pandas as pd

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, capitalised, key_number
from benchmarks.results.load import MAIN_SCENARIO, RunData
from benchmarks.results.metrics import estimate
from benchmarks.results.stats import Estimate, sweep_aggregate

SCENARIO = "silent-drop"
KEY = "settings"  # the swept settings a cell changed, in words ("defaults", "idle_timeout 1 s", ...)
DEFAULTS = "defaults"
METRICS = ["errors_after_action", "hang_s", "recovery_s", "orphans"]
PRE_PING, PLAIN = "sqlalchemy-pre-ping", "sqlalchemy-queue"  # the same QueuePool with and without the check


def table(run: RunData) -> pd.DataFrame:
    """Per target and swept settings: the medians (and intervals) of METRICS over valid repeats, each target's
    defaults first."""
    t = sweep_aggregate(run, SCENARIO, METRICS)
    return t.assign(_defended=t[KEY] != DEFAULTS).sort_values(["_defended", KEY], kind="stable").drop(columns="_defended")


def _setting(v: str) -> str:
    return "its defaults" if v == DEFAULTS else v


def _outcome(row: pd.Series) -> str:
    failed = row["errors_after_action"]
    if pd.isna(failed) or failed == 0:
        return "no request failed after the gap"
    text = f"{fmt.num(failed)} requests failed or hung after the gap"
    if pd.notna(row["hang_s"]):
        text += f", the longest for {fmt.num(row['hang_s'], 's')}"
    text += (
        f", the first success came {fmt.num(row['recovery_s'], 's')} after it"
        if pd.notna(row["recovery_s"])
        else ", and none succeeded before the load ended"
    )
    return text


def sentences(run: RunData) -> list[str]:
    t = table(run)
    out = []
    for target, g in t.groupby("target", sort=False):
        parts = []
        for _, row in g.iterrows():
            orphans = row["orphans"]
            left = f"; PostgreSQL still held {fmt.num(orphans)} of its sessions after it exited" if orphans else ""
            parts.append(f"with {_setting(row[KEY])}, {_outcome(row)}{left}")
        out.append(f"{SCENARIO}, {target}: " + "; ".join(parts) + ".")
    return out


def costs(run: RunData) -> str:
    """What the defences cost: an idle limit's reconnect after the gap (the silent-drop cells where it held, the
    median first success), and pool_pre_ping's p50 and database CPU per request (steady cells)."""
    said = []
    t = table(run)
    idle = t[t[KEY].str.contains("idle_timeout") & (t["errors_after_action"].fillna(0) == 0)] if not t.empty else t
    if not idle.empty and idle["recovery_s"].notna().any():
        said.append(
            f"an idle limit's price is a new connection after each idle gap (the first request after the gap "
            f"answered {fmt.num(float(idle['recovery_s'].median()), 's')} after it, median over the targets)"
        )
    p50, p50_plain = (estimate(run, "latency_p50_ms", MAIN_SCENARIO, x) for x in (PRE_PING, PLAIN))
    cpu, cpu_plain = (estimate(run, "db_cpu_ms_per_request", MAIN_SCENARIO, x) for x in (PRE_PING, PLAIN))
    if p50 and p50_plain:
        text = f"pool_pre_ping's check costs {PRE_PING} {p50.text('ms')} at p50 against {p50_plain.text('ms')}"
        if cpu and cpu_plain:
            text += f", and {cpu.text('ms')} of database CPU per request against {cpu_plain.text('ms')}"
        said.append(text + " (steady)")
    return f"What the defences cost: {'; '.join(said)}." if said else ""


def answer(run: RunData) -> Answer | None:
    t = table(run)
    if t.empty:
        return None
    default, defended = t[t[KEY] == DEFAULTS], t[t[KEY] != DEFAULTS]
    hung = default[default["errors_after_action"] > 0]
    said = []
    key = None
    if not hung.empty:
        row = hung.loc[hung["hang_s"].idxmax()] if hung["hang_s"].notna().any() else hung.iloc[0]
        target = str(row["target"])
        hang = row["hang_s"] if pd.notna(row["hang_s"]) else None
        said.append(
            f"defaults: {len(hung)} of {len(default)} targets hung on dead connections"
            + (f" ({target}: {fmt.num(hang, 's')})" if hang is not None else "")
        )
        if hang is not None:
            est = Estimate(float(hang), float(row["hang_s_lo"]), float(row["hang_s_hi"]), int(row["repeats"]))
            key = key_number("hang_s", SCENARIO, target, est, DEFAULTS)
    elif not default.empty:
        said.append(f"defaults: {len(default)} of {len(default)} targets served on")
    if not defended.empty:  # the setting that saved the most targets
        clean = defended["errors_after_action"].fillna(0) == 0
        best = clean.groupby(defended[KEY]).agg(["sum", "size"]).sort_values(["sum", "size"], ascending=False)
        setting, (saved, of) = best.index[0], best.iloc[0]
        said.append(f"{setting}: {saved} of {of} never failed")
    if not said:
        return None
    return Answer(capitalised(said), " ".join([*sentences(run), costs(run)]).strip(), key)
