"""The load plan: everything Locust must do in one cell, as one typed file (`raw/<cell>/plan.json`).

The runner writes it (benchmarks/run/kinds/), the locustfile reads it through its one option,
`--connbench-plan FILE`, and anyone reading a run folder finds in it what load a cell applied. Without a plan
(the web UI, `connbench up`, docker compose) the locustfile is plain Locust: the form sets the users.

Pure data without Locust (importing Locust patches the process with gevent), unit-tested on its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PLAN_VERSION = 1


@dataclass(frozen=True)
class Stage:
    """One stage of a cell's load: `users` closed-loop users (started at `spawn_rate` per second, 0 = at once),
    or requests due at `rps` per second (with `ramp`, rising linearly from the previous stage's rate)."""

    duration: float
    users: int | None = None
    spawn_rate: float = 0.0
    rps: float | None = None
    ramp: bool = False

    @property
    def is_open(self) -> bool:
        return self.rps is not None


@dataclass(frozen=True)
class CapacitySearch:
    """The capacity search (benchmarks/load/capacity.py): the SLO on p99 from the due time, the failures a step
    may have, the first rate, how it grows and how close the bisection gets, the rate it never exceeds, each
    step's settling and measured seconds, and the search's budget."""

    slo_ms: float = 50.0
    max_error: float = 0.01
    start_rps: float = 50.0
    growth: float = 2.0
    precision: float = 0.1
    max_rps: float = 5000.0
    step_warmup: float = 1.0
    step_duration: float = 3.0
    budget: float = 40.0


@dataclass(frozen=True)
class LoadPlan:
    """What Locust does in one cell.

    `out`: the folder of its files (started, measure_start, history.jsonl, final.json, steps.jsonl);
    `go_file`: created by the runner once the target is ready (Locust waits for it, so that its own start-up
    overlaps the target's); both relative to the plan file's folder when the runner writes them, so the plan
    stays true once the cell's folder is renamed. `stages`: the load shape (empty with a capacity search);
    `warmup`: seconds excluded from the statistics; `db_query`: GET /db's parameters; `arrival` and
    `max_senders`: the open model's draws and its requests in flight per Locust process; `failure_spans`:
    record each failure's send time (cells that signal the target count the requests lost).
    """

    out: str
    go_file: str = ""
    stages: tuple[Stage, ...] = ()
    warmup: float = 0.0
    db_query: str = ""
    arrival: str = "poisson"
    max_senders: int = 100
    failure_spans: bool = False
    capacity: CapacitySearch | None = None
    version: int = PLAN_VERSION

    @property
    def db_path(self) -> str:
        return "/db" + (f"?{self.db_query}" if self.db_query else "")

    @property
    def seconds(self) -> float:
        """How long the load runs: the stages, or the capacity search's budget."""
        return self.capacity.budget if self.capacity else sum(s.duration for s in self.stages)

    @property
    def is_open(self) -> bool:
        """Open-model load: requests due at a rate (arrival stages or a capacity search)."""
        return self.capacity is not None or any(s.is_open for s in self.stages)

    def rate_stages(self) -> list[dict[str, Any]]:
        """The open stages as benchmarks/load/arrival.py's rate_at reads them."""
        return [{"duration": s.duration, "rps": s.rps, "ramp": s.ramp} for s in self.stages if s.is_open]

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> LoadPlan:
        path = Path(path)
        data = json.loads(path.read_text())
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"{path}: load plan version {data.get('version')!r}, expected {PLAN_VERSION}")
        capacity = data.pop("capacity", None)
        stages = tuple(Stage(**s) for s in data.pop("stages", []))
        for key in ("out", "go_file"):  # relative to the plan's folder
            if data.get(key):
                data[key] = str(path.parent / data[key])
        return cls(**data, stages=stages, capacity=CapacitySearch(**capacity) if capacity else None)


__all__ = ["CapacitySearch", "LoadPlan", "Stage"]
