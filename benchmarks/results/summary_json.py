"""summary.json: a run's cells and answers for tools, beside summary.csv, under a versioned schema.

`connbench run` writes it when the run ends; `connbench compare` reads it (or builds it from an older folder's
files). Its schema is benchmarks/results/summary.schema.json (JSON Schema, checked by tests/unit/test_compare.py);
docs/results.md describes it. Nothing here computes a number of its own: cells take the metrics registry
(metrics.py) and the medians with bootstrap intervals of stats.py, answers take the findings' key numbers.

    {"schema": "connbench-summary", "version": 1,
     "run": {run_id, profile, status, git_commit, machine, versions, target_settings, scenarios, ...},
     "metrics": {name: {label, unit, better, description, travels}},
     "cells": [{id, scenario, target, ..., repeats: [cell ids], metrics: {name: {value, lo, hi, n, values}}}],
     "answers": [{id, question, answer, key: {metric, unit, scenario, target, at, travels, value, lo, hi, n} | null}],
     "thresholds": [{threshold, metric, unit, cells_checked, breaches: [{cell_id, value}]}]}
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.errors import ConnbenchError
from benchmarks.results import model
from benchmarks.results.findings.common import KeyNumber
from benchmarks.results.load import RunData, load_run
from benchmarks.results.metrics import METRICS, travels
from benchmarks.results.questions import CLAIMS, QUESTIONS
from benchmarks.results.runfolder import write_atomic
from benchmarks.results.stats import Estimate

SCHEMA = "connbench-summary"
VERSION = 1
FILE = "summary.json"
SCHEMA_FILE = Path(__file__).with_name("summary.schema.json")
_REPEAT = re.compile(r"\.r\d+$")
RUN_KEYS = (
    "run_id", "profile", "status", "started_at", "ended_at", "git_commit", "machine", "versions",
    "target_settings", "scenarios", "load_workers", "path_override", "database",
)  # fmt: skip


def group_id(cell_id: str) -> str:
    """A cell's id without its repeat: `steady.pool-eager-asyncpg.u16.r2` -> `steady.pool-eager-asyncpg.u16`."""
    return _REPEAT.sub("", cell_id)


def _number(v: Any) -> float | None:
    """A JSON number, or null for NaN and None."""
    return None if v is None or pd.isna(v) else float(v)


def _estimate(e: Estimate) -> dict[str, Any]:
    lo, hi = (_number(e.lo), _number(e.hi)) if e.n >= 2 and not math.isnan(e.lo) else (None, None)
    return {"value": _number(e.value), "lo": lo, "hi": hi, "n": e.n}


def _cell(rows: pd.DataFrame) -> dict[str, Any]:
    """One cell (its repeats): what ran, and each metric of the registry over its valid repeats."""
    first = rows.iloc[0]
    valid = rows[rows["valid"]]
    metrics = {}
    for name, m in METRICS.items():
        values = pd.to_numeric(m.values(name, valid), errors="coerce").dropna()
        e = Estimate.of(values)
        if e is not None:
            metrics[name] = {**_estimate(e), "values": [float(v) for v in values]}
    params = first["params"]
    return {
        "id": group_id(str(first["cell_id"])),
        "scenario": str(first["scenario"]),
        "target": str(first["target"]),
        "strategy": str(first["strategy"]),
        "driver": str(first["driver"]),
        "users": int(first["users"]),
        "rtt_ms": _number(first["rtt_ms"]),
        "tls": bool(first["tls"]) if not pd.isna(first["tls"]) else False,
        "pooler": str(first["pooler"]),
        "params": json.loads(params) if isinstance(params, str) and params.strip() else {},
        "repeats": [str(c) for c in rows["cell_id"]],
        "valid_repeats": len(valid),
        "invalid": [
            {"cell_id": str(r.cell_id), "reason": str(r.invalid_reason)} for r in rows[~rows["valid"]].itertuples()
        ],
        "metrics": metrics,
    }


def _key(k: KeyNumber | None) -> dict[str, Any] | None:
    if k is None:
        return None
    return {"metric": k.metric, "unit": k.unit, "scenario": k.scenario, "target": k.target, "at": k.at,
            "travels": travels(k.metric), **_estimate(k.estimate)}  # fmt: skip


def build(run: RunData) -> dict[str, Any]:
    """summary.json's content for a loaded run folder."""
    s = run.summary
    cells = [_cell(g) for _, g in s.groupby(s["cell_id"].map(group_id), sort=False)]
    answers = []
    for prefix, registry in (("question", QUESTIONS), ("claim", CLAIMS)):
        for i, q in enumerate(registry, 1):
            got = q.answer(run)
            answers.append(
                {"id": f"{prefix}-{i}", "question": q.ask, "answer": got.short if got else None,
                 "key": _key(got.key if got else None)}
            )  # fmt: skip
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "run": {k: run.manifest.get(k) for k in RUN_KEYS} | {"repeats": run.repeats},
        "metrics": {
            name: {"label": m.label, "unit": m.unit, "better": m.better, "description": m.description,
                   "travels": m.travels}
            for name, m in METRICS.items()
        },
        "cells": cells,
        "answers": answers,
        "thresholds": run.manifest.get("thresholds") or [],
    }


def write(run_dir: Path) -> Path:
    """Write run_dir/summary.json from the folder's files; return its path."""
    path = Path(run_dir) / FILE
    run = load_run(run_dir)
    write_atomic(path, json.dumps(build(run), indent=1, allow_nan=False) + "\n")
    model.write(run_dir, run)  # model.csv beside it: the model per strategy, checked on held-out cells
    return path


def read(run_dir: Path) -> dict[str, Any]:
    """A run folder's summary.json, or, for a folder written before it existed, the same built from its files."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return build(load_run(run_dir))
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConnbenchError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ConnbenchError(f'{path} is not a connbench summary (no "schema": "{SCHEMA}")')
    if data.get("version") != VERSION:
        raise ConnbenchError(
            f"{path} has summary version {data.get('version')!r}; this connbench reads version {VERSION}"
        )
    return data
