"""Kind "capacity": per target, the highest arrival rate whose p99 (from the due time) stays within the SLO,
found by a search of rate steps inside Locust (benchmarks/load/capacity.py) within a budget of seconds. One
cell per target; its summary row describes the sustainable step and capacity.csv holds the search."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from benchmarks.load import arrival as A
from benchmarks.load.plan import CapacitySearch, LoadPlan, Stage
from benchmarks.run.cells import Cell
from benchmarks.run.locustcell import LocustKind
from benchmarks.run.scenario import Scenario

CAPACITY_KEYS = ("cell_id", "target", "strategy", "driver", "repeat")  # the row's columns capacity.csv repeats


class Capacity(LocustKind):
    name = "capacity"
    open = True

    def check(self, sc: Scenario, where: str) -> Scenario:
        """[capacity] with CapacitySearch's defaults filled in."""
        return dataclasses.replace(sc, capacity={**dataclasses.asdict(CapacitySearch()), **sc.capacity})

    def levels(self, sc: Scenario) -> list[tuple[int, int]]:
        return [(0, 0)]

    def level_id(self, cell: Cell) -> str:
        return ""

    def seconds(self, sc: Scenario) -> float:
        return float(sc.capacity["budget"])

    def stages(self, sc: Scenario, level: int) -> tuple[Stage, ...]:
        return ()

    def plan(self, cell: Cell, raw: Path, load_workers: int) -> LoadPlan:
        base = super().plan(cell, raw, load_workers)
        return dataclasses.replace(base, warmup=0.0, capacity=CapacitySearch(**cell.scenario.capacity))

    def narrow(self, cell: Cell, final: dict[str, Any], row: dict[str, Any]) -> tuple[dict, dict | None, float | None]:
        """The row describes the sustainable step; capacity.csv the search."""
        final, capacity = A.capacity_result(final, cell.scenario.capacity)
        steps = json.loads(capacity["step_log"])
        offered = capacity["sustainable_rps"] or (steps[0][0] if steps else None)
        return final, {**{k: row[k] for k in CAPACITY_KEYS}, **capacity}, offered


KIND = Capacity()
