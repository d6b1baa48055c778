"""A new run's manifest: what ran, on what (versions, machine, git commit), and its progress fields."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from benchmarks.results import summary as S
from benchmarks.run.options import RunOptions
from benchmarks.run.scenario import Scenario
from benchmarks.stack.pgbouncer import pgbouncer_version
from benchmarks.stack.postgres import server_version
from targets.contract import Settings


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def new_manifest(
    run_id: str, options: RunOptions, scenarios: list[Scenario], targets: list[str], skipped: dict[str, str]
) -> dict[str, Any]:
    """`options` is kept whole under "options" (what --resume reads) and its settings also under the keys the
    report and older readers know (load_workers, baseline, path_override, load_master, targets_named,
    user_targets)."""
    saved = options.to_json()
    return {
        "schema_version": S.SCHEMA_VERSION,
        "run_id": run_id,
        "profile": options.profile,
        "status": "running",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ended_at": None,
        "targets": targets,
        "skipped_targets": skipped,
        "scenarios": {sc.name: {k: v for k, v in asdict(sc).items() if k != "name"} for sc in scenarios},
        "target_settings": Settings.from_env().as_dict(),
        "git_commit": _git_commit(),
        "versions": {
            "python": platform.python_version(),
            "postgresql": server_version(),
            "pgbouncer": pgbouncer_version(),
            "locust": _version("locust"),
            "asyncpg": _version("asyncpg"),
            "psycopg": _version("psycopg"),
            "psycopg_pool": _version("psycopg-pool"),
            "uvicorn": _version("uvicorn"),
            "connbench": _version("connbench"),
        },
        "machine": {
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
        },
        "cells_total": 0,
        "cells_done": [],
        "cells_missing": [],
        "load_workers": options.load_workers,
        "baseline": options.baseline,
        "path_override": saved["path"],
        "load_master": options.load_master,
        "targets_named": options.targets is not None,
        "user_targets": saved["user_targets"],
        "options": saved,
    }
