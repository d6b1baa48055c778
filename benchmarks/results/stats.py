"""The report's statistics: medians over repeats with a bootstrap interval, and the tables built from them.

Uncertainty: a cell run several times (repeats >= 2) is summarised by the median of its repeats with a 95%
percentile-bootstrap interval; two numbers whose intervals overlap are reported as within noise.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.results import fmt
from benchmarks.results.load import MAIN_SCENARIO, OPEN_SCENARIO, RunData, with_params
from benchmarks.results.path import on_reference_path

# The figures of a cell that the findings table reports (median over repeats, with an interval).
TABLE_METRICS = ["rps", "latency_p50_ms", "latency_p99_ms", "error_rate", "conn_peak", "sessions_per_request"]
SMALL_RATIO = 1.25  # without intervals, a ratio below this is called indistinguishable from noise
PLATEAU = 0.05  # throughput "stops growing" at the smallest pool within this share of the best
NEAR_THROUGHPUT = 0.25  # a closed-loop cell "at the same throughput" is within this share of the open cell's
# Scenarios whose cells differ by a swept value, drawn by their own figures (named like the scenario); the
# swept column of each.
# The column each swept scenario's figures and answers group by (silent-drop: the settings in words, with_params)
SWEPT_SCENARIOS = {"pool-size": "pool_max", "slow-work": "hold", "silent-drop": "settings"}


def bootstrap_ci(
    values: Iterable[float],
    stat: Callable[..., Any] = np.median,
    level: float = 0.95,
    n_boot: int = 4000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of `stat` over `values` (NaNs dropped); (nan, nan) with fewer than two.

    Deterministic for a given seed, so a report is reproducible from its folder.
    """
    x = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    if x.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    resampled = x[rng.integers(0, x.size, size=(n_boot, x.size))]
    stats = stat(resampled, axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def within_noise(a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    """True when two intervals overlap, False when they are apart, None when either is unknown."""
    if any(math.isnan(v) for v in (*a, *b)):
        return None
    return a[0] <= b[1] and b[0] <= a[1]


@dataclass(frozen=True)
class Estimate:
    """A number over a cell group's repeats: the median, its 95% bootstrap interval and how many values."""

    value: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: pd.Series) -> Estimate | None:
        values = pd.to_numeric(values, errors="coerce").dropna()
        if values.empty:
            return None
        lo, hi = bootstrap_ci(values)
        return cls(float(values.median()), lo, hi, len(values))

    def text(self, unit: str = "", form: Callable[[float], str] = fmt.num) -> str:
        """'46 ms [45–47]' (the interval with two values or more), '2 ms' for 0.002 s."""
        if math.isnan(self.value):
            return "n/a"
        if form is fmt.num and fmt.in_ms(self.value, unit):  # 2 ms [1–3], not 2.0e-03 s
            return Estimate(self.value * 1000, self.lo * 1000, self.hi * 1000, self.n).text("ms")
        base = form(self.value) + (f" {unit}" if unit else "")
        if self.n >= 2 and not math.isnan(self.lo):
            return f"{base} [{form(self.lo)}–{form(self.hi)}]"
        return base


def merge_errors(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(total.most_common())


def aggregate(summary: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per (scenario, target, users): the median over valid repeats of each metric and its interval.

    Columns: scenario, target, strategy, driver, users, repeats, errors (summed), and per metric m: m,
    m_lo, m_hi (the interval is NaN with fewer than two repeats).
    """
    metrics = metrics or TABLE_METRICS
    keys = ["scenario", "target", "strategy", "driver", "users"]
    valid = on_reference_path(summary[summary["valid"]])
    rows = []
    for key, g in valid.groupby(keys, sort=False):
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        row["repeats"] = len(g)
        row["errors"] = merge_errors(g["errors"])
        for m in metrics:
            row[m] = float(g[m].median()) if g[m].notna().any() else math.nan
            row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_ci(g[m])
        rows.append(row)
    cols = keys + ["repeats", "errors"] + [c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi")]
    return pd.DataFrame(rows, columns=cols)


def main_aggregate(run: RunData) -> pd.DataFrame:
    """aggregate() of the main scenario's cells."""
    return aggregate(run.cells(MAIN_SCENARIO))


def invalid_cells(run: RunData) -> pd.DataFrame:
    bad = run.summary[~run.summary["valid"]]
    return bad[["cell_id", "scenario", "target", "users", "repeat", "invalid_reason"]].reset_index(drop=True)


def split_target(run: RunData, target: str) -> tuple[str, str]:
    """(strategy, driver) of a target, from its cells (or its id: `<strategy>-<driver>`)."""
    rows = run.summary[run.summary["target"] == target]
    if len(rows):
        return str(rows["strategy"].iloc[0]), str(rows["driver"].iloc[0])
    strategy, _, driver = target.rpartition("-")
    return strategy, driver


def per_target_table(run: RunData) -> pd.DataFrame:
    """Per target of the run, the main scenario's figures at its highest load level with a valid cell.

    A target without such a cell keeps its row, with NaNs and a note saying why.
    """
    agg = main_aggregate(run)
    main = run.cells(MAIN_SCENARIO)
    rows = []
    for target in run.targets:
        strategy, driver = split_target(run, target)
        mine = agg[agg["target"] == target]
        row: dict[str, Any] = {"target": target, "strategy": strategy, "driver": driver}
        if mine.empty:
            bad = main[main["target"] == target]
            reasons = "; ".join(dict.fromkeys(bad["invalid_reason"].astype(str)))
            row["note"] = f"no valid {MAIN_SCENARIO} cell: {reasons}" if len(bad) else f"no {MAIN_SCENARIO} cell"
            rows.append(row)
            continue
        top = mine.loc[mine["users"].idxmax()]
        row.update({k: top[k] for k in agg.columns if k not in ("scenario", "target", "strategy", "driver")})
        row["errors"] = fmt.errors_text(top["errors"])
        skipped = main[(main["target"] == target) & ~main["valid"] & (main["users"] > top["users"])]
        levels = ", ".join(str(u) for u in sorted(set(skipped["users"])))
        row["note"] = f"invalid at {levels} users" if levels else ""
        rows.append(row)
    cols = ["target", "strategy", "driver", "users", "repeats"]
    cols += [c for m in TABLE_METRICS for c in (m, f"{m}_lo", f"{m}_hi")] + ["errors", "note"]
    df = pd.DataFrame(rows).reindex(columns=cols)
    df["users"] = df["users"].astype("Int64")
    df["repeats"] = df["repeats"].astype("Int64")
    return df


def noise_verdict(a: pd.Series, b: pd.Series, metric: str) -> bool | None:
    """Do two aggregate() rows' intervals of `metric` overlap (None: unknown)?"""
    return within_noise((a[f"{metric}_lo"], a[f"{metric}_hi"]), (b[f"{metric}_lo"], b[f"{metric}_hi"]))


def sweep_aggregate(run: RunData, scenario: str, metrics: list[str]) -> pd.DataFrame:
    """aggregate() of one swept scenario, per value of its swept column (a column of the result)."""
    key = SWEPT_SCENARIOS[scenario]
    rows = with_params(run.cells(scenario))
    if rows.empty or key not in rows:
        return pd.DataFrame(columns=["target", key, *metrics])
    parts = [aggregate(g, metrics).assign(**{key: v}) for v, g in rows.groupby(key)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["target", key, *metrics])


def time_split(run: RunData) -> pd.DataFrame:
    """Per target at its highest valid level of the main scenario: p50 of the whole request, of getting a
    connection and of the query (medians over repeats); the rest is HTTP, the event loop and the driver."""
    agg = aggregate(run.cells(MAIN_SCENARIO), ["latency_p50_ms", "acquire_p50_ms", "query_p50_ms"])
    if agg.empty:
        return agg
    top = agg.loc[agg.groupby("target")["users"].idxmax()]
    return top.dropna(subset=["acquire_p50_ms", "query_p50_ms"]).reset_index(drop=True)


def plateau(points: pd.DataFrame, x: str = "pool_max", y: str = "rps") -> pd.Series | None:
    """The row of the smallest `x` whose `y` is within PLATEAU of the best `y` (where growth stops)."""
    points = points.dropna(subset=[y]).sort_values(x)
    if points.empty:
        return None
    best = points[y].max()
    return points[points[y] >= (1 - PLATEAU) * best].iloc[0]


def open_load(run: RunData) -> pd.DataFrame:
    """Per target and offered rate of the arrival scenario (valid cells, median over repeats): the achieved rate,
    dropped and late requests, p50 and p99 from the due time; and beside it the closed-loop (steady) level of
    the same target whose throughput is nearest the achieved rate, when one is within 25 % of it."""
    s = run.summary
    cells = s[(s["scenario"] == OPEN_SCENARIO) & s["valid"]]
    cols = ["rps", "latency_p50_ms", "latency_p99_ms", "dropped", "late"]
    closed_cols = ["closed_users", "closed_rps", "closed_p50_ms", "closed_p99_ms"]
    if cells.empty:
        return pd.DataFrame(columns=["target", "strategy", "driver", "offered_rps", *cols, *closed_cols])
    out = cells.groupby(["target", "strategy", "driver", "offered_rps"])[cols].median().reset_index()
    closed = aggregate(s[(s["scenario"] == MAIN_SCENARIO) & (s["load_model"] != "open")])
    for i, row in out.iterrows():
        mine = closed[closed["target"] == row["target"]]
        if mine.empty or not row["rps"]:
            continue
        near = mine.loc[(mine["rps"] - row["rps"]).abs().idxmin()]
        if abs(near["rps"] - row["rps"]) <= NEAR_THROUGHPUT * row["rps"]:
            out.loc[i, closed_cols] = [near["users"], near["rps"], near["latency_p50_ms"], near["latency_p99_ms"]]
    return out.reindex(columns=[*out.columns[:9], *closed_cols])
