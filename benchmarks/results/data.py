"""Read a run folder into dataframes, and the numbers the report computes from them.

`load_run(DIR)` checks the folder first (it exists, holds a manifest of the schema this code reads, has
finished cells), so a bad folder fails with one line (ConnbenchError) rather than a traceback in the notebook.
The notebook (notebooks/report.ipynb) and the tests read results only through this module.

Uncertainty: a cell run several times (repeats >= 2) is summarised by the median of its repeats with a 95%
percentile-bootstrap interval; two numbers whose intervals overlap are reported as within noise.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.errors import ConnbenchError
from benchmarks.results.runfolder import RESULTS_ROOT
from benchmarks.results.summary import BASELINE_COLUMNS, CAPACITY_COLUMNS, SCHEMA_VERSION, SUMMARY_COLUMNS, TIMESERIES_COLUMNS
from benchmarks.results.summary import FAULT_COLUMNS as SCHEMA_FAULT_COLUMNS

MAIN_SCENARIO = "steady"  # the load scenario the throughput/latency figures and the findings table use

TEXT_COLUMNS = {"cell_id", "scenario", "target", "strategy", "driver", "started_at", "errors", "invalid_reason"}
TEXT_COLUMNS |= {"params"}  # the swept settings and /db parameters of a cell, a JSON object
BOOL_COLUMNS = {"valid", "counts_agree", "recovered", "shutdown_logged", "db_up", "tls"}
TEXT_COLUMNS |= {"pooler"}  # the connection path: rtt_ms (a number), tls (a bool), pooler (text)
TS_TEXT_COLUMNS = {"cell_id", "scenario", "target", "phase", "event", "pooler"}
# The figures of a cell that the findings table reports (median over repeats, with an interval).
METRICS = ["rps", "latency_p50_ms", "latency_p99_ms", "error_rate", "conn_peak", "sessions_per_request"]


@dataclass
class RunData:
    """One run folder, loaded: summary has one row per cell, `errors` parsed into a dict per row."""

    dir: Path
    manifest: dict[str, Any]
    summary: pd.DataFrame
    timeseries: pd.DataFrame
    baseline: pd.DataFrame

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.dir.name)

    @property
    def targets(self) -> list[str]:
        """The run's targets: the manifest's list (run order), then any other target the summary holds."""
        listed = [str(t) for t in self.manifest.get("targets") or []]
        return listed + [t for t in dict.fromkeys(self.summary["target"]) if t not in listed]

    @property
    def repeats(self) -> int:
        """The largest number of repeats of any cell of the main scenario (1 when it has none)."""
        return self.repeats_in(MAIN_SCENARIO)

    def repeats_in(self, scenario: str) -> int:
        """The largest number of repeats of any cell of `scenario` (1 when it has none)."""
        s = self.summary[self.summary["scenario"] == scenario]
        return int(s.groupby(["target", "users", "params"], dropna=False)["repeat"].nunique().max()) if len(s) else 1

    def repeat_note(self, scenario: str = MAIN_SCENARIO) -> str:
        """What a figure's points are: a median with its interval, or one run per cell."""
        n = self.repeats_in(scenario)
        return f"median of {n} repeats, 95% bootstrap interval" if n >= 2 else "one run per cell"

    def max_connections(self, scenario: str) -> int | None:
        value = (self.manifest.get("scenarios") or {}).get(scenario, {}).get("max_connections")
        return int(value) if isinstance(value, int | float) else None


# -- loading -------------------------------------------------------------------------------------------
def newest_run(root: Path = RESULTS_ROOT) -> Path:
    """The most recently written folder under `root` (by its manifest's mtime, else the folder's; then name)."""

    def written(p: Path) -> tuple[float, str]:
        stamp = p / "manifest.json" if (p / "manifest.json").exists() else p
        return (stamp.stat().st_mtime, p.name)

    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=written) if root.is_dir() else []
    if not runs:
        raise ConnbenchError(f"no run folder under {root}/: run `connbench run` first, or give RUN_DIR")
    return runs[-1]


def check_schema(manifest: dict[str, Any], where: Path) -> None:
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConnbenchError(
            f"{where}: manifest.json has no schema_version (written by an older connbench); "
            f"this connbench reads schema {SCHEMA_VERSION}: run the benchmark again"
        )
    if version < SCHEMA_VERSION:
        raise ConnbenchError(
            f"{where} holds results schema {version}, older than the schema {SCHEMA_VERSION} this connbench "
            "reads: run the benchmark again (connbench run)"
        )
    if version > SCHEMA_VERSION:
        raise ConnbenchError(
            f"{where} holds results schema {version}, newer than the schema {SCHEMA_VERSION} this connbench "
            "reads: upgrade connbench"
        )


def _as_bool(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    return {"true": True, "false": False, "1": True, "0": False}.get(text, pd.NA)


def _typed(df: pd.DataFrame, text: set[str]) -> pd.DataFrame:
    for col in df.columns:
        if col in BOOL_COLUMNS:
            df[col] = df[col].map(_as_bool).astype("boolean")
        elif col in text:
            df[col] = df[col].fillna("").astype(str)
        else:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _parse_errors(text: str, cell: str, path: Path) -> dict[str, int]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ConnbenchError(f"{path}: cell {cell}: the errors column is not a JSON object: {text[:60]!r}")
    return {str(k): int(v) for k, v in value.items()}


def read_summary(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "summary.csv"
    if not path.exists() or path.stat().st_size == 0:
        raise ConnbenchError(
            f"{run_dir}: no finished cell (no summary.csv); finish the run with `connbench run --resume {run_dir}`"
        )
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns]
    if missing:
        raise ConnbenchError(f"{path} lacks the columns {', '.join(missing)} of results schema {SCHEMA_VERSION}")
    if df.empty:
        raise ConnbenchError(
            f"{run_dir}: no finished cell (summary.csv is empty); finish the run with "
            f"`connbench run --resume {run_dir}`"
        )
    df = df.replace("", np.nan)
    df = _typed(df, TEXT_COLUMNS)
    df["valid"] = df["valid"].fillna(False).astype(bool)
    df["errors"] = [_parse_errors(e, c, path) for e, c in zip(df["errors"], df["cell_id"], strict=True)]
    for col in ("users", "repeat"):
        df[col] = df[col].fillna(0).astype(int)
    return df


def read_timeseries(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "timeseries.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({c: pd.Series(dtype=str if c in TS_TEXT_COLUMNS else float) for c in TIMESERIES_COLUMNS})
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in TIMESERIES_COLUMNS if c not in df.columns]
    if missing:
        raise ConnbenchError(f"{path} lacks the columns {', '.join(missing)} of results schema {SCHEMA_VERSION}")
    return _typed(df.replace("", np.nan), TS_TEXT_COLUMNS)


def read_baseline(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "baseline.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in BASELINE_COLUMNS})
    df = pd.read_csv(path, dtype=str, keep_default_na=False).replace("", np.nan)
    return _typed(df, {"tool", "mode", "note", "pooler"})


def load_run(run_dir: Path | str) -> RunData:
    """Load and validate a run folder; ConnbenchError (one line) when it is missing, empty or unreadable."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConnbenchError(f"{run_dir}: no such run folder")
    if not run_dir.is_dir():
        raise ConnbenchError(f"{run_dir} is not a folder")
    if not any(run_dir.iterdir()):
        raise ConnbenchError(f"{run_dir} is empty: not a connbench run folder (no manifest.json)")
    mpath = run_dir / "manifest.json"
    if not mpath.is_file():
        raise ConnbenchError(f"{run_dir} is not a connbench run folder (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConnbenchError(f"{mpath} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ConnbenchError(f"{mpath} is not a JSON object")
    check_schema(manifest, run_dir)
    return RunData(run_dir, manifest, read_summary(run_dir), read_timeseries(run_dir), read_baseline(run_dir))


# -- uncertainty ---------------------------------------------------------------------------------------
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
    metrics = metrics or METRICS
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


# -- findings ------------------------------------------------------------------------------------------
def invalid_cells(run: RunData) -> pd.DataFrame:
    bad = run.summary[~run.summary["valid"]]
    return bad[["cell_id", "scenario", "target", "users", "repeat", "invalid_reason"]].reset_index(drop=True)


def errors_text(errors: dict[str, int], top: int = 3) -> str:
    items = list(errors.items())
    text = ", ".join(f"{k} {v:,}" for k, v in items[:top])
    return text + (f", +{len(items) - top} more" if len(items) > top else "")


def findings(run: RunData) -> pd.DataFrame:
    """Per target of the run, the main scenario's figures at its highest load level with a valid cell.

    A target without such a cell keeps its row, with NaNs and a note saying why.
    """
    agg = aggregate(run.summary[run.summary["scenario"] == MAIN_SCENARIO])
    main = run.summary[run.summary["scenario"] == MAIN_SCENARIO]
    rows = []
    for target in run.targets:
        strategy, driver = _split_target(run, target)
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
        row["errors"] = errors_text(top["errors"])
        skipped = main[(main["target"] == target) & ~main["valid"] & (main["users"] > top["users"])]
        levels = ", ".join(str(u) for u in sorted(set(skipped["users"])))
        row["note"] = f"invalid at {levels} users" if levels else ""
        rows.append(row)
    cols = ["target", "strategy", "driver", "users", "repeats"]
    cols += [c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi")] + ["errors", "note"]
    df = pd.DataFrame(rows).reindex(columns=cols)
    df["users"] = df["users"].astype("Int64")
    df["repeats"] = df["repeats"].astype("Int64")
    return df


def _split_target(run: RunData, target: str) -> tuple[str, str]:
    """(strategy, driver) of a target, from its cells (or its id: `<strategy>-<driver>`)."""
    rows = run.summary[run.summary["target"] == target]
    if len(rows):
        return str(rows["strategy"].iloc[0]), str(rows["driver"].iloc[0])
    strategy, _, driver = target.rpartition("-")
    return strategy, driver


def ratio_text(r: float) -> str:
    if r >= 10:
        return f"{r:.0f}×"
    if r >= 1:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def in_ms(v: float, unit: str) -> bool:
    """Is `v` seconds better read in milliseconds (2 ms, not 2.0e-03 s)?"""
    return unit == "s" and 0 < abs(v) < 0.1


def num(v: float, unit: str = "") -> str:
    """A number at a readable precision: 37,624 / 314 / 2.7 / 0.21 / 7.8e-05."""
    if v is None or pd.isna(v):
        return "n/a"
    a = abs(v)
    if in_ms(v, unit):
        return num(v * 1000, "ms")
    if a >= 100:
        text = f"{v:,.0f}"
    elif a >= 10:
        text = f"{v:.1f}".rstrip("0").rstrip(".")
    elif a >= 0.01 or a == 0:
        text = f"{v:.2f}".rstrip("0").rstrip(".")
    else:
        text = f"{v:.1e}"
    return f"{text} {unit}".rstrip() if unit else text


def _noise(a: pd.Series, b: pd.Series, metric: str) -> str:
    verdict = within_noise((a[f"{metric}_lo"], a[f"{metric}_hi"]), (b[f"{metric}_lo"], b[f"{metric}_hi"]))
    if verdict is None:
        return ""
    return " (within noise: the 95% intervals overlap)" if verdict else " (the 95% intervals are apart)"


SMALL_RATIO = 1.25  # without intervals, a ratio below this is called indistinguishable from noise
LABELS = {
    "rps": ("throughput", "req/s"),
    "latency_p50_ms": ("p50", "ms"),
    "latency_p99_ms": ("p99", "ms"),
}


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
    name, unit = LABELS[metric]
    ratio = x[metric] / y[metric]
    noise = _noise(x, y, metric)
    if not noise and ratio < SMALL_RATIO:
        noise = f" (under {SMALL_RATIO - 1:.0%}: with one repeat, not to be told from noise)"
    return (
        f"{x['target']} {name} is {ratio_text(ratio)} {y['target']}'s at {u} users "
        f"({num(x[metric], unit)} vs {num(y[metric], unit)}){noise}."
    )


def per_request_text(v: float) -> str:
    """Sessions per request, readable: '1.00', '0.09', '1 per 12,888 requests', '0'."""
    if v is None or pd.isna(v):
        return "n/a"
    if v == 0:
        return "0"
    if v < 0.01:
        return f"1 per {1 / v:,.0f} requests"
    return f"{v:.2f}"


def sentences(run: RunData) -> list[str]:
    """The report's findings as sentences, every number computed from the run."""
    out: list[str] = []
    main = run.summary[run.summary["scenario"] == MAIN_SCENARIO]
    agg = aggregate(main)
    table = findings(run)
    have = set(agg["target"])
    drivers = list(dict.fromkeys(run.summary["driver"]))

    repeats = run.repeats
    if repeats >= 2:
        out.append(
            f"Each {MAIN_SCENARIO} cell ran {repeats} times: figures are medians with 95% bootstrap intervals; a "
            "difference whose intervals overlap is within noise."
        )
    else:
        out.append(
            f"Each {MAIN_SCENARIO} cell ran once, so the report cannot tell a difference from noise "
            f"(on {run.manifest.get('machine', {}).get('cores', '?')} cores); the full profile repeats cells."
        )

    ok = table.dropna(subset=["rps"])
    clean = ok[ok["error_rate"] == 0]
    if len(clean):
        best, worst = clean.loc[clean["rps"].idxmax()], clean.loc[clean["rps"].idxmin()]
        out.append(
            f"Among targets without a failed request, most throughput: {best['target']}, "
            f"{num(best['rps'], 'req/s')} at {best['users']} users; least: {worst['target']}, "
            f"{num(worst['rps'], 'req/s')} at {worst['users']} users."
        )

    for d in drivers:  # what a connection costs
        a, b = f"per-request-{d}", f"pool-eager-{d}"
        if a in have and b in have:
            for metric in ("latency_p50_ms", "rps"):
                s = compare(agg, a, b, metric)
                if s:
                    out.append(s)
    for d in drivers:
        for a, b in ((f"pgbouncer-{d}", f"per-request-{d}"), (f"pool-lazy-{d}", f"pool-eager-{d}")):
            if a in have and b in have:
                s = compare(agg, a, b, "latency_p50_ms")
                if s:
                    out.append(s)

    spr = ok.dropna(subset=["sessions_per_request"])
    if len(spr):
        opening = spr[spr["sessions_per_request"] >= 0.5]
        reusing = spr[spr["sessions_per_request"] < 0.5]
        if len(opening):
            out.append(
                "Opened a new PostgreSQL session for (about) every request: "
                + ", ".join(f"{r.target} ({per_request_text(r.sessions_per_request)})" for r in opening.itertuples())
                + "."
            )
        if len(reusing):
            out.append(
                "Reused their sessions (fewer than one new session per two requests): "
                + ", ".join(f"{r.target} ({per_request_text(r.sessions_per_request)})" for r in reusing.itertuples())
                + "."
            )

    failing = ok[ok["error_rate"] > 0].sort_values("error_rate", ascending=False)
    for r in failing.itertuples():
        out.append(f"{r.target} failed {r.error_rate:.1%} of its requests at {r.users} users: {r.errors}.")
    if len(clean):
        out.append("No failed request: " + ", ".join(clean["target"]) + ".")

    cap = run.max_connections(MAIN_SCENARIO)
    conns = ok.dropna(subset=["conn_peak"])
    if len(conns):
        lo, hi = conns.loc[conns["conn_peak"].idxmin()], conns.loc[conns["conn_peak"].idxmax()]
        text = (
            f"Peak PostgreSQL connections range from {num(lo['conn_peak'])} ({lo['target']}) to "
            f"{num(hi['conn_peak'])} ({hi['target']})"
        )
        if cap:
            near = conns[conns["conn_peak"] >= 0.8 * cap]
            text += f"; max_connections is {cap}"
            if len(near):
                text += ", reached or nearly reached by " + ", ".join(near["target"])
        out.append(text + ".")

    out += _baseline_sentences(run, ok)
    out += _fault_sentences(run)
    out += conn_cap_sentences(run) + pool_size_sentences(run) + slow_work_sentences(run)

    bad = invalid_cells(run)
    if len(bad):
        out.append(
            f"{len(bad)} of {len(run.summary)} cells are invalid and left out of the figures (listed apart, with "
            "their reason)."
        )
    return out


def _baseline_sentences(run: RunData, ok: pd.DataFrame) -> list[str]:
    b = run.baseline
    if b.empty:
        return []
    b = reference_baseline(b)
    pg = b[b["tool"] == "pgbench"].set_index("mode")
    out = []
    if {"pooled", "connect-per-transaction"} <= set(pg.index):
        pooled, per = pg.loc["pooled"], pg.loc["connect-per-transaction"]
        if pd.notna(pooled["tps"]) and pd.notna(per["tps"]) and per["tps"]:
            text = (
                f"pgbench on the same query with {int(pooled['clients'])} clients: {num(pooled['tps'], 'tps')} on "
                f"open connections, {num(per['tps'], 'tps')} with a new connection per transaction (-C), "
                f"{ratio_text(pooled['tps'] / per['tps'])} fewer"
            )
            if pd.notna(per["connect_ms"]):
                text += f"; one connection took {num(per['connect_ms'], 'ms')} on average"
            out.append(text + ".")
        clean = ok[ok["error_rate"] == 0]
        if len(clean) and pd.notna(pooled["tps"]) and pooled["tps"]:
            best = clean.loc[clean["rps"].idxmax()]
            out.append(
                f"The fastest target without failures ({best['target']}, {num(best['rps'], 'req/s')}) served "
                f"{best['rps'] / pooled['tps']:.0%} of pgbench's rate on open connections; a target adds an HTTP "
                f"service and shares the machine's {run.manifest.get('machine', {}).get('cores', '?')} cores with "
                "the load generator."
            )
    return out


def _fault_sentences(run: RunData) -> list[str]:
    """One sentence per target of each fault scenario the run has, from whichever fault columns it filled."""
    out = []
    s = run.summary[run.summary["valid"]]
    own_figures = path_scenarios(run)
    for scenario, g in s.groupby("scenario", sort=False):
        if scenario in (MAIN_SCENARIO, "spike") or scenario in SWEPT_SCENARIOS or scenario in own_figures:
            continue
        parts_by_target = []
        for target, rows in g.groupby("target", sort=False):
            med = rows.median(numeric_only=True)
            parts = []
            for col in FAULT_COLUMNS.get(scenario, GENERIC_FAULT_COLUMNS):
                if col in BOOL_COLUMNS:
                    vals = rows[col].dropna()
                    if len(vals):
                        parts.append(f"{FAULT_LABELS[col][0]}: {'yes' if vals.all() else 'no'}")
                elif col == "error_rate" and pd.notna(med[col]):
                    parts.append(f"{med[col]:.1%} of requests failed")
                elif col in med and pd.notna(med[col]):
                    name, unit = FAULT_LABELS[col]
                    parts.append(f"{name} {num(med[col], unit)}")
            if parts:
                parts_by_target.append(f"{target}: {', '.join(parts)}")
        if parts_by_target:
            out.append(f"{scenario}: " + "; ".join(parts_by_target) + ".")
    return out


# The fault scenarios and the summary columns that tell their story, in the order the report shows them.
FAULT_COLUMNS: dict[str, list[str]] = {
    "cold-start": ["time_to_ready_s", "first_request_ms", "first10_p50_ms", "error_rate"],
    "db-restart": ["outage_s", "errors_after_action", "recovery_s", "recovered"],
    "conn-cap": ["conn_peak", "errors_53300", "error_rate"],
    "idle-timeout": ["errors_after_action", "recovery_s", "recovered"],
    "shutdown": ["shutdown_logged", "release_s", "errors_after_action"],
    "shutdown-kill": ["shutdown_logged", "release_s", "errors_after_action"],
}
# For a scenario not listed above: whichever of these it filled.
GENERIC_FAULT_COLUMNS = ["time_to_ready_s", *SCHEMA_FAULT_COLUMNS]
FAULT_LABELS: dict[str, tuple[str, str]] = {
    "time_to_ready_s": ("time to ready", "s"),
    "first_request_ms": ("first request", "ms"),
    "first10_p50_ms": ("p50 of the first 10 requests", "ms"),
    "outage_s": ("outage", "s"),
    "errors_after_action": ("failed requests after the action", ""),
    "recovery_s": ("recovered after", "s"),
    "recovered": ("recovered", ""),
    "conn_peak": ("peak connections", ""),
    "errors_53300": ("53300 errors", ""),
    "error_rate": ("error rate", ""),
    "shutdown_logged": ("exit hook reached the database", ""),
    "release_s": ("connections released after", "s"),
}


# -- open model: arrival cells and the capacity search ---------------------------------------------------
OPEN_SCENARIO = "arrival"
CAPACITY_TEXT_COLUMNS = {"cell_id", "target", "strategy", "driver", "reason", "step_log"}
NEAR_THROUGHPUT = 0.25  # a closed-loop cell "at the same throughput" is within this share of the open cell's


def read_capacity(run_dir: Path) -> pd.DataFrame:
    """capacity.csv (one row per target's search), empty when the run had no capacity scenario."""
    path = Path(run_dir) / "capacity.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(
            {c: pd.Series(dtype=str if c in CAPACITY_TEXT_COLUMNS else float) for c in CAPACITY_COLUMNS}
        )
    df = pd.read_csv(path, dtype=str, keep_default_na=False).replace("", np.nan)
    return _typed(df, CAPACITY_TEXT_COLUMNS)


def open_load(run: RunData) -> pd.DataFrame:
    """Per target and offered rate of the arrival scenario (valid cells, median over repeats): the achieved rate,
    dropped and late requests, p50 and p99 from the due time; and beside it the closed-loop (steady) level of
    the same target whose throughput is nearest the achieved rate, when one is within 25 % of it."""
    s = run.summary
    cells = s[(s["scenario"] == OPEN_SCENARIO) & s["valid"]]
    cols = ["rps", "latency_p50_ms", "latency_p99_ms", "dropped", "late"]
    if cells.empty:
        return pd.DataFrame(columns=["target", "strategy", "driver", "offered_rps", *cols, "closed_users",
                                     "closed_rps", "closed_p50_ms", "closed_p99_ms"])  # fmt: skip
    out = cells.groupby(["target", "strategy", "driver", "offered_rps"])[cols].median().reset_index()
    closed = aggregate(s[(s["scenario"] == MAIN_SCENARIO) & (s["load_model"] != "open")])
    for i, row in out.iterrows():
        mine = closed[closed["target"] == row["target"]]
        if mine.empty or not row["rps"]:
            continue
        near = mine.loc[(mine["rps"] - row["rps"]).abs().idxmin()]
        if abs(near["rps"] - row["rps"]) <= NEAR_THROUGHPUT * row["rps"]:
            out.loc[i, ["closed_users", "closed_rps", "closed_p50_ms", "closed_p99_ms"]] = [
                near["users"], near["rps"], near["latency_p50_ms"], near["latency_p99_ms"]]  # fmt: skip
    return out.reindex(columns=[*out.columns[:9], "closed_users", "closed_rps", "closed_p50_ms", "closed_p99_ms"])


def ms_text(v: float) -> str:
    return "n/a" if v is None or pd.isna(v) else (f"{num(v / 1000)} s" if v >= 1000 else f"{num(v)} ms")


def _capacity_text(g: pd.DataFrame) -> str:
    """'50 req/s (asyncpg, failed at 100: p99 81 ms > 50 ms)' for one target's searches (median over repeats)."""
    text = f"{num(g['sustainable_rps'].median())} req/s ({g['driver'].iloc[0]}"
    if g["failed_at_rps"].notna().any():
        return text + f", failed at {num(g['failed_at_rps'].median())}: {g['reason'].iloc[0]})"
    return f"at least {text}, {g['reason'].iloc[0]})"  # the search stopped before a higher rate failed


def _open_text(top: pd.Series) -> str:
    text = (
        f"offered {num(top['offered_rps'])} req/s, {top['target']} completed {num(top['rps'])} req/s with "
        f"{num(top['dropped'])} dropped and {num(top['late'])} late, p99 {ms_text(top['latency_p99_ms'])} from the "
        "due time"
    )
    if pd.notna(top.get("closed_rps")):
        text += (
            f", where a closed loop of {int(top['closed_users'])} users at {num(top['closed_rps'])} req/s reported "
            f"p99 {ms_text(top['closed_p99_ms'])}"
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
            parts.append(f"serves with p99 within {num(mine['slo_ms'].iloc[0])} ms of the due time {served}")
        rows = arr[arr["strategy"] == strategy]
        if len(rows):
            parts.append(_open_text(rows.loc[rows["offered_rps"].idxmax()]))
        out.append(f"{strategy}: " + "; ".join(parts) + ".")
    return out


# -- where the time goes; pool size and slow work (scenarios whose cells differ by a swept value) --------
# Drawn by their own figures (named like the scenario), not as fault panels; the swept column of each.
SWEPT_SCENARIOS = {"pool-size": "pool_max", "slow-work": "hold"}
PLATEAU = 0.05  # throughput "stops growing" at the smallest pool within this share of the best


def with_params(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with one column per key of `params` (the cell's swept values and /db parameters)."""
    params = [json.loads(p) if isinstance(p, str) and p.strip() else {} for p in summary["params"]]
    extra = pd.DataFrame(params, index=summary.index)
    return summary.join(extra[[c for c in extra.columns if c not in summary.columns]])


def sweep_aggregate(run: RunData, scenario: str, metrics: list[str]) -> pd.DataFrame:
    """aggregate() of one swept scenario, per value of its swept column (a column of the result)."""
    key = SWEPT_SCENARIOS[scenario]
    rows = with_params(run.summary[run.summary["scenario"] == scenario])
    if rows.empty or key not in rows:
        return pd.DataFrame(columns=["target", key, *metrics])
    parts = [aggregate(g, metrics).assign(**{key: v}) for v, g in rows.groupby(key)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["target", key, *metrics])


def time_split(run: RunData) -> pd.DataFrame:
    """Per target at its highest valid level of the main scenario: p50 of the whole request, of getting a
    connection and of the query (medians over repeats); the rest is HTTP, the event loop and the driver."""
    main = run.summary[run.summary["scenario"] == MAIN_SCENARIO]
    agg = aggregate(main, ["latency_p50_ms", "acquire_p50_ms", "query_p50_ms"])
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


def pool_size_sentences(run: RunData) -> list[str]:
    agg = sweep_aggregate(run, "pool-size", ["rps", "latency_p99_ms", "acquire_p50_ms", "query_p50_ms"])
    if agg.empty:
        return []
    cores = (run.manifest.get("machine") or {}).get("cores")
    out = []
    for target, g in agg.groupby("target", sort=False):
        stop = plateau(g)
        if stop is None:
            continue
        g = g.sort_values("pool_max").set_index("pool_max", drop=False)
        first, best = g.iloc[0], g.loc[g["rps"].idxmax()]
        text = (
            f"pool-size, {target} at {int(first['users'])} users: throughput goes from {num(first['rps'], 'req/s')} "
            f"at pool_max {int(first['pool_max'])} to {num(stop['rps'], 'req/s')} at {int(stop['pool_max'])}, "
            f"where it stops growing (the smallest pool within {PLATEAU:.0%} of the best"
        )
        text += (
            ")"
            if stop["pool_max"] == best["pool_max"]
            else f", {num(best['rps'], 'req/s')} at {int(best['pool_max'])})"
        )
        if cores and 2 * int(cores) in g.index:
            text += f"; at cores × 2 = {2 * int(cores)}: {num(g.loc[2 * int(cores), 'rps'], 'req/s')}"
        if pd.notna(first["acquire_p50_ms"]) and pd.notna(first["query_p50_ms"]):
            text += (
                f"; at pool_max {int(first['pool_max'])} a request waited {num(first['acquire_p50_ms'], 'ms')} "
                f"(p50) for its connection, its query took {num(first['query_p50_ms'], 'ms')}"
            )
        if g["repeats"].max() < 2:
            text += f" (one run per size: steps under {SMALL_RATIO - 1:.0%} cannot be told from noise)"
        out.append(text + ".")
    return out


def slow_work_sentences(run: RunData) -> list[str]:
    agg = sweep_aggregate(run, "slow-work", ["rps", "error_rate", "latency_p99_ms", "acquire_p99_ms"])
    if agg.empty:
        return []
    rows = with_params(run.summary[run.summary["scenario"] == "slow-work"])
    work = rows["work_ms"].dropna().iloc[0] if "work_ms" in rows and rows["work_ms"].notna().any() else None
    parts = []
    for target, g in agg.groupby("target", sort=False):
        said = []
        for hold, name in ((1, "holding the connection"), (0, "after releasing it")):
            r = g[g["hold"] == hold]
            if r.empty:
                continue
            r = r.iloc[0]
            served = r["rps"] * (1 - (r["error_rate"] if pd.notna(r["error_rate"]) else 0))
            failed = f"{r['error_rate']:.0%} failed: {errors_text(r['errors'])}" if r["error_rate"] else "none failed"
            said.append(f"{num(served, 'req/s')} {name} ({failed})")
        if said:
            parts.append(f"{target} served " + " and ".join(said))
    if not parts:
        return []
    what = f"{num(work)} ms of slow work per request" if work is not None else "slow work per request"
    return [f"slow-work ({what}): " + "; ".join(parts) + "."]


def conn_cap_sentences(run: RunData) -> list[str]:
    """The arithmetic of replicas × pool against the cap, beside what PostgreSQL showed."""
    rows = run.summary[(run.summary["scenario"] == "conn-cap") & run.summary["valid"]]
    rows = rows.dropna(subset=["conn_wanted", "conn_slots"])
    if rows.empty:
        return []
    parts = []
    for target, g in rows.groupby("target", sort=False):
        r = g.median(numeric_only=True)
        verdict = "more than" if r["conn_wanted"] > r["conn_slots"] else "within"
        parts.append(
            f"{target} wants {num(r['conn_wanted'])} ({int(r['workers'])} workers × pool_max {num(r['pool_max'])}), "
            f"{verdict} the {num(r['conn_slots'])} slots; PostgreSQL showed {num(r['conn_peak'])}"
        )
    return ["conn-cap: " + "; ".join(parts) + "."]


# -- the connection path (rtt_ms, tls, pooler) ---------------------------------------------------------
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
    """The scenarios that ran at two RTTs or more: the connection-path figures and sentences tell their story."""
    rtts = run.summary[run.summary["rtt_ms"].notna()].groupby("scenario")["rtt_ms"].nunique()
    return set(rtts[rtts >= 2].index)


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
    rows = []
    for key, g in agg.groupby([k for k in PATH_KEYS if k != "scenario"], sort=False):
        g = g.dropna(subset=["latency_p50_ms"])
        if g["rtt_ms"].nunique() < 2:
            continue
        slope = np.polyfit(g["rtt_ms"].astype(float), g["latency_p50_ms"].astype(float), 1)[0]
        rows.append({**dict(zip([k for k in PATH_KEYS if k != "scenario"], key, strict=True)), "round_trips": slope})
    return pd.DataFrame(rows)


def connect_round_trips(run: RunData) -> pd.DataFrame:
    """baseline.csv's round trips per new connection (pgbench -C, one client), per TLS mode, with theory."""
    b = run.baseline
    if b.empty or "round_trips" not in b or b["round_trips"].isna().all():
        return pd.DataFrame(columns=["path", "measured", "theory"])
    rows = []
    for tls, g in b[(b["mode"] == "connect") & b["round_trips"].notna()].groupby("tls"):
        path = "scram-sha-256, TLS" if tls else "scram-sha-256, no TLS"
        rows.append({"path": path, "measured": float(g["round_trips"].iloc[0]), "theory": THEORY_ROUND_TRIPS[path]})
    return pd.DataFrame(rows)


def _pool_for(agg: pd.DataFrame, driver: str) -> str | None:
    """The pooled Python strategy to compare per-request with: pool-eager, else pool-lazy."""
    present = set(agg.loc[agg["driver"] == driver, "strategy"])
    return next((s for s in ("pool-eager", "pool-lazy") if s in present), None)


def distance_sentences(run: RunData) -> list[str]:
    """The connection-path questions in words: from which RTT does per-request lose to a pool by 10×, what a
    PgBouncer next to the app saves against one next to the database, and a connect's round trips."""
    agg = distance_aggregate(run)
    out = []
    for r in connect_round_trips(run).itertuples():
        out.append(
            f"A new connection ({r.path}) costs {r.measured:.1f} round trips (pgbench -C against RTT; "
            f"the protocol's count is {r.theory})."
        )
    if agg.empty:
        return out
    rtps = round_trips_per_request(agg)
    for (driver, tls), g in agg[agg["pooler"] == ""].groupby(["driver", "tls"], sort=False):
        pool = _pool_for(g, driver)
        per = g[g["strategy"] == "per-request"].set_index("rtt_ms")["latency_p50_ms"]
        if pool is None or per.empty:
            continue
        ref = g[g["strategy"] == pool].set_index("rtt_ms")["latency_p50_ms"]
        ratio = (per / ref).dropna().sort_index()
        if ratio.empty:
            continue
        worse = ratio[ratio >= 10]
        each = ", ".join(f"{ratio_text(v)} at {num(k)} ms" for k, v in ratio.items())
        if len(worse) == len(ratio):
            verdict = f"it loses by 10× or more at every RTT run (up to {num(ratio.index[-1])} ms)"
        elif len(worse):
            verdict = f"it loses by 10× or more at {', '.join(num(k) for k in worse.index)} ms of RTT only"
        else:
            verdict = f"it loses by less than 10× at every RTT run (up to {num(ratio.index[-1])} ms)"
        trips = rtps[(rtps["driver"] == driver) & (rtps["tls"] == tls) & (rtps["pooler"] == "")]
        trips = trips.set_index("strategy")["round_trips"] if len(trips) else pd.Series(dtype=float)
        if {"per-request", pool} <= set(trips.index) and trips[pool] > 0:
            verdict += (
                f"; as the distance grows the ratio tends to that of their round trips per request, "
                f"{trips['per-request']:.1f} against {trips[pool]:.1f} "
                f"({ratio_text(trips['per-request'] / trips[pool])})"
            )
        out.append(f"per-request-{driver} ({path_label(tls, '')}) has a p50 {each} that of {pool}-{driver}: {verdict}.")
    bouncers = agg[agg["pooler"] != ""]
    for (target, tls), g in bouncers.groupby(["target", "tls"], sort=False):
        p50 = g.pivot_table(index="rtt_ms", columns="pooler", values="latency_p50_ms")
        if not {"near-db", "near-app"} <= set(p50.columns):
            continue
        far = p50[p50.index > 0].dropna()
        if far.empty:
            continue
        rtt = far.index.max()
        saved = far.loc[rtt, "near-db"] - far.loc[rtt, "near-app"]
        out.append(
            f"{target} ({path_label(tls, '')}) at {num(rtt)} ms RTT: p50 {num(far.loc[rtt, 'near-db'])} ms with "
            f"PgBouncer next to the database, {num(far.loc[rtt, 'near-app'])} ms next to the app: near-app saves "
            f"{num(saved)} ms per request ({num(saved / rtt)} round trips)."
        )
    return out
