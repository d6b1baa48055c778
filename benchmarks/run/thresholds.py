"""Thresholds on a run, as k6 keeps them: `latency_p99_ms<50`, `error_rate<0.01` (what must hold per cell).

`connbench run --threshold EXPR` (repeatable) states them for every cell; a scenario file's `thresholds` for
that scenario's cells, a target file's for that target's. After the run each one is checked against every valid
cell in its scope that measured its metric (a name of benchmarks/results/metrics.py), the result is written to
manifest.json under "thresholds", and when any cell breaches one the run exits with 99 (k6's code; BREACH_EXIT in
benchmarks/cli/run.py), one line per breach, after every file is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.errors import ConnbenchError
from benchmarks.results import fmt
from benchmarks.results.load import read_summary
from benchmarks.results.metrics import METRICS, OPERATORS

_EXPR = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Threshold:
    """What must hold in every valid cell: `metric op limit`."""

    metric: str
    op: str
    limit: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.limit:g}"

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.limit)


def parse_threshold(text: str) -> Threshold:
    """`latency_p99_ms<50` as a Threshold; ConnbenchError (one line) naming what is wrong."""
    m = _EXPR.match(text)
    if not m:
        raise ConnbenchError(f"threshold {text!r} is not METRIC<NUMBER (or <=, >, >=), e.g. 'latency_p99_ms<50'")
    metric, op, limit = m.group(1), m.group(2), float(m.group(3))
    if metric not in METRICS:
        raise ConnbenchError(f"threshold {text!r}: unknown metric {metric!r} (metrics: {', '.join(METRICS)})")
    return Threshold(metric, op, limit)


@dataclass(frozen=True)
class Scope:
    """The cells a threshold is about: every cell (column ""), or those whose `column` (scenario, target) is
    `value`."""

    column: str = ""
    value: str = ""

    def __str__(self) -> str:
        return f"{self.column} {self.value}" if self.column else "every cell"


def check(
    thresholds: Iterable[Threshold], summary: pd.DataFrame, scopes: Iterable[Scope] | None = None
) -> list[dict[str, Any]]:
    """Each threshold against each valid cell of `summary` (summary.csv, as benchmarks.results.load reads it) in
    its scope (`scopes`, one per threshold; default every cell): one result per threshold with the cells checked
    and the cells that breach it (cell id and value)."""
    out = []
    thresholds = list(thresholds)
    for t, scope in zip(thresholds, scopes or [Scope()] * len(thresholds), strict=True):
        valid = summary[summary["valid"]]
        if scope.column:
            valid = valid[valid[scope.column] == scope.value]
        values = pd.to_numeric(METRICS[t.metric].values(t.metric, valid), errors="coerce")
        measured = [(str(cid), float(v)) for cid, v in zip(valid["cell_id"], values, strict=True) if not math.isnan(v)]
        breaches = [{"cell_id": cid, "value": v} for cid, v in measured if not t.holds(v)]
        out.append(
            {
                "threshold": str(t),
                **({"scope": str(scope)} if scope.column else {}),
                "metric": t.metric,
                "unit": METRICS[t.metric].unit,
                "cells_checked": len(measured),
                "breaches": breaches,
            }
        )
    return out


def breach_lines(results: Iterable[dict[str, Any]]) -> list[str]:
    """One line per breached cell: `threshold latency_p99_ms<50 breached: <cell>: latency_p99_ms = 63 ms`."""
    lines = []
    for r in results:
        for b in r["breaches"]:
            value = fmt.num(b["value"], r["unit"])
            scope = f" ({r['scope']})" if r.get("scope") else ""
            lines.append(f"threshold {r['threshold']}{scope} breached: {b['cell_id']}: {r['metric']} = {value}")
    return lines


def unchecked_lines(results: Iterable[dict[str, Any]]) -> list[str]:
    """One line per threshold no valid cell measured (not a breach, but not a pass either)."""
    return [
        f"threshold {r['threshold']}: no valid cell measured {r['metric']}" for r in results if not r["cells_checked"]
    ]


def check_run(
    run_dir: Path, thresholds: Iterable[str], scoped: Iterable[tuple[str, Scope]] = ()
) -> list[dict[str, Any]]:
    """check() of the run's thresholds (as RunOptions keeps them, for every cell) and of the `scoped` ones (a
    scenario file's, a target file's) on the folder's summary.csv."""
    pairs = [(t, Scope()) for t in thresholds] + list(scoped)
    return check([parse_threshold(t) for t, _ in pairs], read_summary(run_dir), [s for _, s in pairs])


def parse_list(where: str, value: Any) -> tuple[str, ...]:
    """A file's `thresholds = ["latency_p99_ms<50", ...]`, each checked; a ConnbenchError names `where`."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConnbenchError(f"{where}: key 'thresholds' must be a list of strings, got {value!r}")
    try:
        return tuple(str(parse_threshold(v)) for v in value)
    except ConnbenchError as exc:
        raise ConnbenchError(f"{where}: {exc}") from None
