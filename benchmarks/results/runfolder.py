"""A run folder on disk: its files, written atomically, one writer at a time, checked against each other.

A run folder holds manifest.json, summary.csv, timeseries.csv, raw/<cell>/ (and baseline.csv, capacity.csv,
the report). Every file is replaced atomically, a cell's raw/ folder is in place before its summary row, and
its summary row before the manifest lists it, so a crash at any moment leaves files that `reconcile` can check
against each other: a cell counts as done only when its row is whole and its raw/ folder exists.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import fcntl
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.errors import ConnbenchError
from benchmarks.results import summary as S

RESULTS_ROOT = Path("results")  # where `connbench run` puts its folders (relative to the working directory)
LOCK_FILE = ".lock"


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_csv_atomic(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    write_atomic(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def new_run_id(profile: str) -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{profile}"


def check_out(out: Path | None) -> None:
    """Refuse an --out that is a file or a folder with something in it (before anything is started)."""
    if out is not None and out.exists() and not out.is_dir():
        raise ConnbenchError(f"--out {out} is a file, not a folder")
    if out is not None and out.exists() and any(out.iterdir()):
        raise ConnbenchError(f"{out} exists and is not empty (use --resume {out} to finish an interrupted run)")
    if out is not None and not out.exists():  # can it be made? Tried now, not after the verify step's targets
        made = [p for p in (out, *out.parents) if not p.exists()]
        try:
            out.mkdir(parents=True)
        except OSError as exc:
            raise ConnbenchError(f"cannot write the results folder {out}: {exc.strerror}") from None
        for path in made:  # deepest first: leave no trace of the probe
            path.rmdir()


def prepare_out(out: Path | None, run_id: str) -> Path:
    """Create the run folder (or fail clearly before anything is started).

    Without --out the folder is results/<run id>, with -2, -3 … appended when a run started in the same second
    already took the name (mkdir is the test, so two runs can never get the same folder).
    """
    if out is None:
        RESULTS_ROOT.mkdir(parents=True, exist_ok=True)
        for n in range(1, 100):
            candidate = RESULTS_ROOT / (run_id if n == 1 else f"{run_id}-{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            out = candidate
            break
        else:
            raise ConnbenchError(f"cannot find a free folder name for {RESULTS_ROOT / run_id}")
    else:
        check_out(out)
    try:
        (out / "raw").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConnbenchError(f"cannot write the results folder {out}: {exc.strerror}") from None
    return out


class RunLock:
    """One writer per run folder: an exclusive lock on <run>/.lock, held for the life of the process.

    The kernel drops the lock when the holder dies, however it dies, so a lock that can be taken while the
    manifest still says `running` means the last writer died without finishing.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.fh: Any = None

    def acquire(self) -> None:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise ConnbenchError(f"{self.path.parent} is being written by another connbench run ({holder})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
        fh.flush()
        self.fh = fh

    def release(self) -> None:
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.fh.close()
            self.fh = None


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an existing run folder, or one line saying why it cannot be resumed."""
    path = folder / "manifest.json"
    if not folder.is_dir():
        raise ConnbenchError(f"{folder} is not a connbench run folder (no such folder)")
    if not path.exists():
        raise ConnbenchError(f"{folder} is not a connbench run folder (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConnbenchError(f"{path} is damaged ({exc}); it cannot be resumed") from None
    missing = [k for k in ("profile", "scenarios", "targets", "cells_done") if k not in manifest]
    if not isinstance(manifest, dict) or missing:
        raise ConnbenchError(f"{path} is damaged (missing {', '.join(missing) or 'everything'}); it cannot be resumed")
    return manifest


class Run:
    """A results folder being written: manifest, summary.csv, timeseries.csv, raw/."""

    def __init__(self, out: Path, manifest: dict[str, Any]) -> None:
        self.out = out
        self.manifest = manifest
        self.summary = read_csv(out / "summary.csv")
        self.timeseries = read_csv(out / "timeseries.csv")
        self.capacity = read_csv(out / "capacity.csv")  # one row per capacity cell, kept with its summary row

    def save_manifest(self) -> None:
        write_atomic(self.out / "manifest.json", json.dumps(self.manifest, indent=2, default=str) + "\n")

    def add(
        self, row: dict[str, Any], timeseries: Sequence[dict[str, Any]] = (), capacity: dict[str, Any] | None = None
    ) -> None:
        """Append one cell's rows (its summary row, timeseries rows and capacity row) and mark it done."""
        if capacity is not None:
            self.capacity.append(capacity)
            write_csv_atomic(self.out / "capacity.csv", S.CAPACITY_COLUMNS, self.capacity)
        self.summary.append(row)
        self.timeseries += list(timeseries)
        write_csv_atomic(self.out / "timeseries.csv", S.TIMESERIES_COLUMNS, self.timeseries)
        write_csv_atomic(self.out / "summary.csv", S.SUMMARY_COLUMNS, self.summary)
        self.manifest["cells_done"].append(row["cell_id"])
        self.save_manifest()

    def reconcile(self, planned: list[str]) -> list[str]:
        """Keep only whole, planned, once-only cells with their raw/ folder; return what was repaired.

        A row with missing fields (a half-written line), a row of an unplanned cell, a second row of a cell, a
        row whose raw/ folder is gone: each is dropped (with its timeseries rows), so the cell runs again.
        """
        repaired: list[str] = []
        kept: dict[str, dict[str, Any]] = {}
        plan = set(planned)
        for row in self.summary:
            cid = row.get("cell_id") or "?"
            if None in row or any(v is None for v in row.values()):
                repaired.append(f"{cid}: half-written summary row, run again")
            elif cid not in plan:
                repaired.append(f"{cid}: not a cell of this run, dropped")
            elif cid in kept:
                repaired.append(f"{cid}: listed twice, kept once")
            elif not (self.out / "raw" / cid).is_dir():
                repaired.append(f"{cid}: raw/{cid} missing, run again")
            else:
                kept[cid] = row
        for cid in self.manifest.get("cells_done", []):
            if cid not in kept and cid in plan and not any(r.startswith(f"{cid}:") for r in repaired):
                repaired.append(f"{cid}: in the manifest but not in summary.csv, run again")
        ts = [r for r in self.timeseries if r.get("cell_id") in kept]
        seen: set[tuple] = set()
        unique_ts = []
        for r in ts:
            key = (r.get("cell_id"), r.get("t"))
            if key not in seen:
                seen.add(key)
                unique_ts.append(r)
        capacity = {r.get("cell_id"): r for r in self.capacity if r.get("cell_id") in kept}  # once each
        if len(capacity) != len(self.capacity):
            self.capacity = list(capacity.values())
            write_csv_atomic(self.out / "capacity.csv", S.CAPACITY_COLUMNS, self.capacity)
        if repaired or len(unique_ts) != len(self.timeseries):
            self.summary = list(kept.values())
            self.timeseries = unique_ts
            write_csv_atomic(self.out / "timeseries.csv", S.TIMESERIES_COLUMNS, self.timeseries)
            write_csv_atomic(self.out / "summary.csv", S.SUMMARY_COLUMNS, self.summary)
        self.manifest["cells_done"] = list(kept)
        return repaired
