"""Read a run folder into typed dataframes: the manifest, summary, timeseries, baseline and capacity files.

`load_run(DIR)` checks the folder first (it exists, holds a manifest of the schema this code reads, has
finished cells), so a bad folder fails with one line (ConnbenchError) rather than a traceback in the notebook.
The settings a sentence quotes (max_connections, workers, users) are read here from the run, never assumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.errors import ConnbenchError
from benchmarks.results import fmt
from benchmarks.results.runfolder import RESULTS_ROOT
from benchmarks.results.summary import (
    BASELINE_COLUMNS,
    CAPACITY_COLUMNS,
    ADDED_COLUMNS,
    SCHEMA_VERSION,
    SUMMARY_COLUMNS,
    TIMESERIES_COLUMNS,
)
from targets.contract import SETTINGS
from targets.registry import BUILT_IN

MAIN_SCENARIO = "steady"  # the load scenario the throughput/latency figures and the findings table use
OPEN_SCENARIO = "arrival"  # the open-model scenario: requests due at a rate

TEXT_COLUMNS = {"cell_id", "scenario", "target", "strategy", "driver", "started_at", "errors", "invalid_reason"}
TEXT_COLUMNS |= {"params"}  # the swept settings and /db parameters of a cell, a JSON object
BOOL_COLUMNS = {"valid", "counts_agree", "recovered", "shutdown_logged", "db_up", "tls"}
TEXT_COLUMNS |= {"pooler"}  # the connection path: rtt_ms (a number), tls (a bool), pooler (text)
TS_TEXT_COLUMNS = {"cell_id", "scenario", "target", "phase", "event", "pooler"}
CAPACITY_TEXT_COLUMNS = {"cell_id", "target", "strategy", "driver", "reason", "step_log"}


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

    @property
    def http_ceiling(self) -> tuple[str, float] | None:
        """This machine's HTTP ceiling, from the baseline: wrk against a pooled target on loopback, (target, req/s)."""
        b = self.baseline
        rows = b[(b["tool"] == "wrk") & b["tps"].notna()] if len(b) and "tps" in b else b
        if rows.empty:
            return None
        return str(rows["mode"].iloc[0]), float(rows["tps"].iloc[0])

    @property
    def cores(self) -> Any:
        """The machine's cores as the manifest gives them ('?' when it does not)."""
        return (self.manifest.get("machine") or {}).get("cores", "?")

    def repeats_in(self, scenario: str) -> int:
        """The largest number of repeats of any cell of `scenario` (1 when it has none)."""
        s = self.summary[self.summary["scenario"] == scenario]
        return int(s.groupby(["target", "users", "params"], dropna=False)["repeat"].nunique().max()) if len(s) else 1

    def repeat_note(self, scenario: str = MAIN_SCENARIO) -> str:
        """What a figure's points are: a median with its interval, or one run per cell."""
        n = self.repeats_in(scenario)
        return f"median of {n} repeats, 95% bootstrap interval" if n >= 2 else "one run per cell"

    def setting(self, scenario: str, key: str) -> Any:
        """A scenario's setting as the manifest records it (None when the run did not record it)."""
        return (self.manifest.get("scenarios") or {}).get(scenario, {}).get(key)

    def max_connections(self, scenario: str) -> int | None:
        value = self.setting(scenario, "max_connections")
        return int(value) if isinstance(value, int | float) else None

    def workers(self, scenario: str) -> int | None:
        """The target processes per target in `scenario` (the manifest's setting)."""
        value = self.setting(scenario, "workers")
        return int(value) if isinstance(value, int | float) else None

    def top_users(self, scenario: str) -> int | None:
        """The highest users level any cell of `scenario` ran at."""
        users = self.summary.loc[self.summary["scenario"] == scenario, "users"]
        return int(users.max()) if len(users) else None

    def cells(self, scenario: str, target: str | None = None) -> pd.DataFrame:
        """The summary rows of `scenario` (of `target` only, when given), valid or not."""
        s = self.summary
        keep = s["scenario"] == scenario
        if target is not None:
            keep &= s["target"] == target
        return s[keep]


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
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns and c not in ADDED_COLUMNS]
    if missing:
        raise ConnbenchError(f"{path} lacks the columns {', '.join(missing)} of results schema {SCHEMA_VERSION}")
    for col in ADDED_COLUMNS:
        if col not in df.columns:
            df[col] = ""
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


def read_capacity(run_dir: Path) -> pd.DataFrame:
    """capacity.csv (one row per target's search), empty when the run had no capacity scenario."""
    path = Path(run_dir) / "capacity.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(
            {c: pd.Series(dtype=str if c in CAPACITY_TEXT_COLUMNS else float) for c in CAPACITY_COLUMNS}
        )
    df = pd.read_csv(path, dtype=str, keep_default_na=False).replace("", np.nan)
    return _typed(df, CAPACITY_TEXT_COLUMNS)


def with_params(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with one column per key of `params` (the cell's swept values and /db parameters), and
    `settings`: the swept target settings a cell changed from their defaults, in words ("idle_timeout 1 s,
    tcp_keepalive 1 s"; "defaults" when none), for a scenario that sweeps several at once."""
    params = [json.loads(p) if isinstance(p, str) and p.strip() else {} for p in summary["params"]]
    extra = pd.DataFrame(params, index=summary.index)
    extra["settings"] = [settings_label(p) for p in params]
    return summary.join(extra[[c for c in extra.columns if c not in summary.columns]])


def settings_label(params: dict[str, Any]) -> str:
    """The target settings (targets/contract.py SETTINGS) in `params` that differ from their defaults, in words."""
    changed = [
        f"{k} {fmt.num(float(v), 's' if k.endswith(('_timeout', '_keepalive')) else '')}"
        for k, v in params.items()
        if k in SETTINGS and float(v) != SETTINGS[k].default
    ]
    return ", ".join(changed) or "defaults"


def family_of(target: str) -> str:
    """The family of a target of connbench's registry; "yours" for any other (a user's service)."""
    return BUILT_IN[target].family if target in BUILT_IN else "yours"


def first_param(run: RunData, scenario: str, key: str) -> Any:
    """The first value of the /db parameter or swept setting `key` among the cells of `scenario` (None if none)."""
    rows = with_params(run.cells(scenario))
    return rows[key].dropna().iloc[0] if key in rows and rows[key].notna().any() else None


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
