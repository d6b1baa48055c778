"""The options of one `connbench run`: one frozen value the command line builds and the manifest keeps.

`run_matrix(options)` takes it; `manifest.json` stores it as JSON under "options" (the DSN without its
password), and `connbench run --resume DIR` rebuilds it from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.stack.postgres import redact
from targets.yours import UserTarget, from_json

# (rtts in ms, TLS modes, poolers) from --rtt, --tls and --pooler: each None where not given, else replacing
# every scenario's [network] value.
ConnectionPath = tuple[tuple[float, ...] | None, tuple[bool, ...] | None, tuple[str, ...] | None]


@dataclass(frozen=True)
class RunOptions:
    profile: str = "quick"
    targets: tuple[str, ...] | None = None  # --targets: the built-in targets named (None: every runnable one)
    scenarios: tuple[str, ...] | None = None  # --scenarios (None: the profile's)
    out: Path | None = None  # the run folder (None: results/<UTC time>-<profile>)
    resume: Path | None = None  # finish the interrupted run in this folder
    baseline: bool = True  # pgbench/wrk before the cells
    load_workers: int = 1  # Locust processes
    path: ConnectionPath = (None, None, None)
    user_targets: tuple[UserTarget, ...] = ()  # --target-file and --url
    dsn: str | None = None  # an existing database instead of the embedded one
    load_master: str = ""  # HOST:PORT where Locust's master waits for `connbench load-worker`s
    thresholds: tuple[str, ...] = ()  # --threshold: what must hold in every valid cell (benchmarks/run/thresholds.py)

    def to_json(self) -> dict[str, Any]:
        """For the manifest: plain JSON values, the DSN without its password."""
        return {
            "profile": self.profile,
            "targets": list(self.targets) if self.targets is not None else None,
            "scenarios": list(self.scenarios) if self.scenarios is not None else None,
            "out": str(self.out) if self.out is not None else None,
            "resume": str(self.resume) if self.resume is not None else None,
            "baseline": self.baseline,
            "load_workers": self.load_workers,
            "path": [list(v) if v is not None else None for v in self.path],
            "user_targets": [dataclasses.asdict(t) for t in self.user_targets],
            "dsn": redact(self.dsn) if self.dsn else None,
            "load_master": self.load_master,
            "thresholds": list(self.thresholds),
        }

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], resume: Path, dsn: str | None) -> RunOptions:
        """The options of the run a manifest records, to finish it in `resume`. `dsn`: given again on the command
        line, since the manifest never holds its password. A run written before "options" existed has them in
        the manifest's older keys."""
        saved = manifest.get("options") or {
            "profile": manifest["profile"],
            "targets": manifest["targets"] if manifest.get("targets_named") else None,
            "scenarios": list(manifest["scenarios"]),
            "baseline": manifest.get("baseline", True),
            "load_workers": manifest.get("load_workers", 1),
            "path": manifest.get("path_override", [None, None, None]),
            "user_targets": manifest.get("user_targets", []),
            "load_master": manifest.get("load_master", ""),
        }
        rtts, tls, poolers = (tuple(v) if v is not None else None for v in saved["path"])
        return cls(
            profile=saved["profile"],
            targets=tuple(saved["targets"]) if saved["targets"] is not None else None,
            scenarios=tuple(saved["scenarios"]) if saved["scenarios"] is not None else None,
            out=resume,
            resume=resume,
            baseline=saved["baseline"],
            load_workers=saved["load_workers"],
            path=(rtts, tls, poolers),
            user_targets=tuple(from_json(saved["user_targets"])),
            dsn=dsn,
            load_master=saved["load_master"],
            thresholds=tuple(saved.get("thresholds", ())),
        )
