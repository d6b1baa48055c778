"""Cell kinds: what a scenario's `kind` names. A kind plans its cells (the levels of a scenario), says how long
one takes, checks its own keys of a scenario file, runs one cell and returns a typed CellResult.

Each kind is one module of this package that defines `KIND`, an instance of a CellKind subclass; the registry
finds them by listing the package, so adding a kind means adding its module and a scenario file that names
it, and nothing else. The kinds that drive a target with Locust share benchmarks/run/locustcell.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from benchmarks.errors import ConnbenchError

if TYPE_CHECKING:
    from benchmarks.run.cells import Cell, CellRun
    from benchmarks.run.scenario import Scenario
    from benchmarks.stack.external import Database
    from benchmarks.stack.network import Network
    from targets.registry import Target


@dataclass
class CellContext:
    """What a cell runs on: the stack of its group of cells, its raw/ folder (written as `.partial`, renamed by
    the runner when the cell is done), what it starts (so an interrupt stops it), and the load generators."""

    pg: Database
    net: Network
    raw: Path
    live: CellRun
    load_workers: int = 1
    load_master: str = ""


@dataclass
class CellResult:
    """One cell's output: its summary.csv row, its timeseries.csv rows, and its capacity.csv row if any."""

    row: dict[str, Any]
    timeseries: list[dict[str, Any]] = field(default_factory=list)
    capacity: dict[str, Any] | None = None


class CellKind:
    """The interface of a cell kind. `name` is the scenario file's `kind`; `level_id` how a cell's level
    shows in its id (`.u8`, `.rps400`, nothing); `measures_start`: the cell starts the target itself and
    measures that (so a service already running at a --url cannot take part)."""

    name: ClassVar[str]
    measures_start: ClassVar[bool] = False

    def check(self, sc: Scenario, where: str) -> Scenario:
        """The scenario with this kind's checks done and defaults filled (a ConnbenchError names the file)."""
        return sc

    def levels(self, sc: Scenario) -> list[tuple[int, int]]:
        """The levels of a scenario, one set of cells each, as (users, rate)."""
        return [(u, 0) for u in sc.users]

    def level_id(self, cell: Cell) -> str:
        return f".u{cell.users}"

    def seconds(self, sc: Scenario) -> float:
        """How long one cell applies load (the progress bar's estimate and the load generator's deadline)."""
        raise NotImplementedError

    def run(self, cell: Cell, ctx: CellContext) -> CellResult:
        raise NotImplementedError


def row_header(cell: Cell, target: Target, workers: int) -> dict[str, Any]:
    """The summary row's first columns, the same for every kind."""
    return {
        "cell_id": cell.id, "scenario": cell.scenario.name, "target": target.id, "strategy": target.strategy,
        "driver": target.driver, "users": cell.users, "repeat": cell.repeat, "workers": workers,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "valid": True, "invalid_reason": "",
    }  # fmt: skip


def failed_start(row: dict[str, Any], log: Path) -> CellResult:
    """The result of a cell whose target did not become ready: invalid, with the last lines of its log."""
    from benchmarks.stack.procs import log_tail

    last = log_tail(log, 3).replace("\n", " | ")
    return CellResult({**row, "valid": False, "invalid_reason": f"target failed to start: {last}"})


@functools.cache
def registry() -> dict[str, CellKind]:
    """Every kind of this package, by name."""
    kinds: dict[str, CellKind] = {}
    for info in pkgutil.iter_modules(__path__):
        kind = getattr(importlib.import_module(f"{__name__}.{info.name}"), "KIND", None)
        if isinstance(kind, CellKind):
            kinds[kind.name] = kind
    return dict(sorted(kinds.items()))


def get(name: str, where: str = "") -> CellKind:
    kinds = registry()
    if name not in kinds:
        prefix = f"{where}: " if where else ""
        raise ConnbenchError(f"{prefix}key 'kind' must be one of {', '.join(kinds)}, got {name!r}")
    return kinds[name]
