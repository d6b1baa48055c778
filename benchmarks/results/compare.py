"""Two runs compared, as asv compare and critcmp do: per cell and per answer's key number, old, new, their ratio,
and whether the difference is beyond noise; with `--fail-on` limits that gate a CI job.

Noise, per cell and metric, when both runs have two valid repeats or more: a bootstrap over the repeats (each
side resampled, 4,000 times, its median taken; the 95% interval of the difference new − old). The change is
*beyond noise* when that interval leaves out 0 and the change is at least MIN_CHANGE of the old value (repeats
of one run share its machine's state, so a smaller change between two runs is not trusted); else *within
noise*. With one repeat on either side noise cannot be judged, and the verdict says so. An answer's key number
carries only its interval: beyond noise when the two intervals are apart (the report's rule).

Reads each folder's summary.json (benchmarks/results/summary_json.py); a folder written before it existed is
read through the same code from its other files.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.errors import ConnbenchError
from benchmarks.results import fmt, summary_json
from benchmarks.results.metrics import METRICS, OPERATORS
from benchmarks.results.stats import TABLE_METRICS, within_noise

MIN_CHANGE = 0.10  # asv compare's default factor (1.1): a smaller change is never called beyond noise
N_BOOT = 4000
BEYOND, WITHIN, UNKNOWN = "beyond noise", "within noise", "noise unknown"  # unknown: one repeat
NOISE_METHOD = (
    "bootstrap over repeats: each run's repeats resampled 4,000 times, the 95% interval of the difference of "
    "medians; beyond noise when it leaves out 0 and the change is at least {floor:.0%}"
)
_LIMIT = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+]\d+(?:\.\d+)?)\s*%\s*$", re.IGNORECASE)
MACHINE_KEYS = ("cpu_model", "cores", "memory_gb", "platform")
SETTING_KEYS = ("profile", "target_settings", "scenarios", "load_workers", "path_override", "database")


@dataclass(frozen=True)
class Limit:
    """`--fail-on 'rps<-10%'`: a change of `metric` (new against old, in %) that fails the comparison."""

    metric: str
    op: str
    pct: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.pct:+g}%"

    def breached(self, change_pct: float) -> bool:
        return OPERATORS[self.op](change_pct, self.pct)


def parse_limit(text: str) -> Limit:
    """`rps<-10%` or `latency_p99_ms>+20%` as a Limit; ConnbenchError (one line) naming what is wrong."""
    m = _LIMIT.match(text)
    if not m:
        raise ConnbenchError(
            f"--fail-on {text!r} is not METRIC<CHANGE% or METRIC>CHANGE% with a signed change, e.g. 'rps<-10%'"
        )
    if m.group(1) not in METRICS:
        raise ConnbenchError(f"--fail-on {text!r}: unknown metric {m.group(1)!r} (metrics: {', '.join(METRICS)})")
    return Limit(m.group(1), m.group(2), float(m.group(3)))


@dataclass
class Comparison:
    """What `connbench compare` prints, as --json writes it (to_json)."""

    old: dict[str, Any]
    new: dict[str, Any]
    differences: list[str]
    noise: str
    rows: list[dict[str, Any]]
    only_old: list[str]
    only_new: list[str]
    answers: list[dict[str, Any]]
    limits: list[str] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "differences": self.differences,
            "noise": self.noise,
            "cells": self.rows,
            "only_in_old": self.only_old,
            "only_in_new": self.only_new,
            "answers": self.answers,
            "fail_on": self.limits,
            "breaches": self.breaches,
        }


# -- noise ---------------------------------------------------------------------------------------------
def verdict(old: list[float], new: list[float], floor: float = MIN_CHANGE) -> tuple[str, list[float] | None]:
    """(BEYOND | WITHIN | UNKNOWN, the 95% bootstrap interval of median(new) − median(old), or None)."""
    if len(old) < 2 or len(new) < 2:
        return UNKNOWN, None
    rng = np.random.default_rng(0)
    a, b = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    ma = np.median(a[rng.integers(0, a.size, size=(N_BOOT, a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, size=(N_BOOT, b.size))], axis=1)
    lo, hi = (float(v) for v in np.quantile(mb - ma, [0.025, 0.975]))
    base = abs(float(np.median(a)))
    diff = abs(float(np.median(b) - np.median(a)))
    big = diff > 0 and (base == 0 or diff / base >= floor)
    return (BEYOND if (lo > 0 or hi < 0) and big else WITHIN), [lo, hi]


def _change(old: float, new: float) -> tuple[float | None, float | None]:
    """(new / old, the change in % of old); None where old is 0."""
    if old == 0:
        return (1.0, 0.0) if new == 0 else (None, None)
    return new / old, (new - old) / abs(old) * 100


# -- the comparison ------------------------------------------------------------------------------------
def _side(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    run = data["run"]
    return {"dir": str(folder), "run_id": run.get("run_id"), "git_commit": run.get("git_commit"),
            "repeats": run.get("repeats"), "status": run.get("status")}  # fmt: skip


NOT_SETTINGS = ("path",)  # where a scenario's file lay: the same scenario from another checkout is the same


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    """Nested settings as dotted keys; an empty or zero value (None, [], {}, "", 0, false) as None, as a key a
    run lacks (a setting added since, at its default of none: idle_drop_s 0, idle_timeout 0)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k not in NOT_SETTINGS:
                out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value if value not in (None, [], {}, "", 0) else None}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line each for a different machine, different settings (of scenarios both ran) and other versions."""
    a, b = old["run"], new["run"]
    out = []
    ma, mb = a.get("machine") or {}, b.get("machine") or {}
    moved = [f"{k} {ma.get(k)!r} vs {mb.get(k)!r}" for k in MACHINE_KEYS if ma.get(k) != mb.get(k)]
    if moved:
        out.append("different machines: " + "; ".join(moved))
    common = set(a.get("scenarios") or {}) & set(b.get("scenarios") or {})
    sa = {k: v for k, v in a.items() if k in SETTING_KEYS}
    sb = {k: v for k, v in b.items() if k in SETTING_KEYS}
    for side in (sa, sb):
        side["scenarios"] = {k: v for k, v in (side.get("scenarios") or {}).items() if k in common}
    fa, fb = _flat(sa, ""), _flat(sb, "")
    changed = [f"{k} {fa.get(k)!r} vs {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    if changed:
        out.append("different settings: " + "; ".join(changed))
    va, vb = a.get("versions") or {}, b.get("versions") or {}
    other = [f"{k} {va.get(k)} vs {vb.get(k)}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
    if other:
        out.append("different versions: " + "; ".join(other))
    return out


def _row(cell: str, metric: str, a: dict[str, Any], b: dict[str, Any], floor: float) -> dict[str, Any]:
    m = METRICS[metric]
    ratio, change = _change(a["value"], b["value"])
    said, interval = verdict(a["values"], b["values"], floor)
    direction = None
    if said == BEYOND and m.better is not None:
        up = b["value"] > a["value"]
        direction = "better" if up == (m.better == "higher") else "worse"
    return {"cell": cell, "metric": metric, "unit": m.unit, "old": a["value"], "new": b["value"], "ratio": ratio,
            "change_pct": change, "interval": interval, "verdict": said, "direction": direction,
            "repeats": [len(a["values"]), len(b["values"])]}  # fmt: skip


def _answers(old: dict[str, Any], new: dict[str, Any], floor: float = MIN_CHANGE) -> list[dict[str, Any]]:
    """The answers whose key number both runs have (same metric, scenario, target and variant); beyond noise
    when their intervals are apart and the change is at least `floor`, as for a cell."""
    keyed = {a["id"]: a for a in new["answers"] if a["key"]}
    out = []
    for a in old["answers"]:
        b = keyed.get(a["id"])
        ka, kb = a["key"], b["key"] if b else None
        if not ka or not kb or any(ka[k] != kb[k] for k in ("metric", "scenario", "target", "at")):
            continue
        if ka["value"] is None or kb["value"] is None:
            continue
        ratio, change = _change(ka["value"], kb["value"])
        overlap = within_noise(*(((k["lo"], k["hi"]) if k["lo"] is not None else (math.nan,) * 2) for k in (ka, kb)))
        big = change is None or abs(change) >= floor * 100
        said = UNKNOWN if overlap is None else (BEYOND if not overlap and big else WITHIN)
        out.append({"id": a["id"], "question": a["question"], "metric": ka["metric"], "unit": ka["unit"],
                    "target": ka["target"], "old": ka["value"], "new": kb["value"], "ratio": ratio,
                    "change_pct": change, "verdict": said})  # fmt: skip
    return out


def compare(old_dir: Path, new_dir: Path, limits: Iterable[Limit] = (), floor: float = MIN_CHANGE) -> Comparison:
    """Compare two run folders; `limits` (--fail-on) fill `breaches`, one line each."""
    old, new = summary_json.read(old_dir), summary_json.read(new_dir)
    limits = list(limits)
    metrics = list(dict.fromkeys([*TABLE_METRICS, *(lim.metric for lim in limits)]))
    cells_a = {c["id"]: c for c in old["cells"]}
    cells_b = {c["id"]: c for c in new["cells"]}
    rows = []
    for cid in (c for c in cells_a if c in cells_b):
        ma, mb = cells_a[cid]["metrics"], cells_b[cid]["metrics"]
        both = [m for m in metrics if m in ma and m in mb and ma[m]["value"] is not None and mb[m]["value"] is not None]
        rows += [_row(cid, m, ma[m], mb[m], floor) for m in both]
    breaches = []
    for lim in limits:
        for r in rows:
            if r["metric"] == lim.metric and r["change_pct"] is not None and r["verdict"] != WITHIN:
                if lim.breached(r["change_pct"]):
                    breaches.append(f"fail-on {lim} breached: {r['cell']}: {_row_text(r)}")
    return Comparison(
        old=_side(old, old_dir),
        new=_side(new, new_dir),
        differences=differences(old, new),
        noise=NOISE_METHOD.format(floor=floor),
        rows=rows,
        only_old=[c for c in cells_a if c not in cells_b],
        only_new=[c for c in cells_b if c not in cells_a],
        answers=_answers(old, new, floor),
        limits=[str(lim) for lim in limits],
        breaches=breaches,
    )


# -- output --------------------------------------------------------------------------------------------
def _pct(r: dict[str, Any]) -> str:
    return "n/a" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%"


def _ratio(r: dict[str, Any]) -> str:
    return "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"


def _mark(r: dict[str, Any]) -> str:
    return r["verdict"] + (f", {r['direction']}" if r.get("direction") else "")


def _row_text(r: dict[str, Any]) -> str:
    return f"{r['metric']} {fmt.num(r['old'], r['unit'])} -> {fmt.num(r['new'], r['unit'])} ({_pct(r)}, {_mark(r)})"


def header_lines(c: Comparison) -> list[str]:
    """What was compared, how noise is judged, and how the runs differ."""
    lines = [
        f"old: {c.old['dir']} ({c.old['run_id']}, commit {c.old['git_commit']})",
        f"new: {c.new['dir']} ({c.new['run_id']}, commit {c.new['git_commit']})",
    ]
    lines.append(f"noise: {c.noise}")
    cells = dict.fromkeys(r["cell"] for r in c.rows)
    unknown = dict.fromkeys(r["cell"] for r in c.rows if r["verdict"] == UNKNOWN)
    if unknown:
        lines.append(
            f"noise cannot be judged in {len(unknown)} of {len(cells)} cells: a run has one repeat of them "
            "(their changes are shown without a verdict)"
        )
    return lines + c.differences


def markdown(c: Comparison) -> str:
    """For a CI job summary or a pull-request comment."""
    out = ["## connbench compare", ""] + [f"- {line}" for line in header_lines(c)] + [""]
    if c.rows:
        out += ["| cell | metric | old | new | ratio | change | verdict |", "|---|---|--:|--:|--:|--:|---|"]
        for r in c.rows:
            mark = _mark(r) if r["verdict"] != BEYOND else f"**{_mark(r)}**"
            out.append(
                f"| {r['cell']} | {r['metric']} | {fmt.num(r['old'], r['unit'])} | {fmt.num(r['new'], r['unit'])} "
                f"| {_ratio(r)} | {_pct(r)} | {mark} |"
            )
        out.append("")
    for name, ids in (("Only in old", c.only_old), ("Only in new", c.only_new)):
        if ids:
            out += [f"{name}: " + ", ".join(f"`{i}`" for i in ids), ""]
    if c.answers:
        out += ["| answer | key number | old | new | ratio | verdict |", "|---|---|--:|--:|--:|---|"]
        for a in c.answers:
            out.append(
                f"| {a['question']} | {a['metric']} of {a['target']} | {fmt.num(a['old'], a['unit'])} | "
                f"{fmt.num(a['new'], a['unit'])} | {_ratio(a)} | {a['verdict']} |"
            )
        out.append("")
    if c.limits:
        out.append(f"**fail-on** {', '.join(f'`{lim}`' for lim in c.limits)}: " + (
            f"{len(c.breaches)} breach(es)" if c.breaches else "no breach"))  # fmt: skip
        out += [f"- {b}" for b in c.breaches]
    return "\n".join(out).rstrip() + "\n"


def print_table(c: Comparison, console: Any) -> None:
    """The rich tables of the terminal."""
    from rich.table import Table

    for line in header_lines(c):
        console.print(line, highlight=False)
    table = Table(title="cells")
    for name, justify in (("cell", "left"), ("metric", "left"), ("old", "right"), ("new", "right"),
                          ("ratio", "right"), ("change", "right"), ("verdict", "left")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    style = {"worse": "red", "better": "green"}
    for i, r in enumerate(c.rows):
        first = i == 0 or c.rows[i - 1]["cell"] != r["cell"]
        last = i == len(c.rows) - 1 or c.rows[i + 1]["cell"] != r["cell"]
        table.add_row(r["cell"] if first else "", r["metric"], fmt.num(r["old"], r["unit"]),
                      fmt.num(r["new"], r["unit"]), _ratio(r), _pct(r), _mark(r),
                      style=style.get(r["direction"] or ""), end_section=last)  # fmt: skip
    console.print(table)
    for name, ids in (("only in old", c.only_old), ("only in new", c.only_new)):
        if ids:
            console.print(f"{name}: " + ", ".join(ids), highlight=False)
    if c.answers:
        answers = Table(title="answers' key numbers")
        for name in ("answer", "key number", "old", "new", "ratio", "verdict"):
            answers.add_column(name)
        for a in c.answers:
            answers.add_row(a["question"], f"{a['metric']} of {a['target']}", fmt.num(a["old"], a["unit"]),
                            fmt.num(a["new"], a["unit"]), _ratio(a), a["verdict"])  # fmt: skip
        console.print(answers)
