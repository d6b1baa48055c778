"""The cells of a run: scenario x target x level x variant x repeat x connection path, in run order; what one
cell has started (so an interrupt stops it); and how long cells should take."""

from __future__ import annotations

import dataclasses
import itertools
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

from benchmarks.load.sampler import Sampler
from benchmarks.run.scenario import Scenario
from benchmarks.stack.middlebox import unavailable as middlebox_unavailable
from benchmarks.stack.network import DEFAULT_POOLER
from benchmarks.stack.procs import stop_process
from targets.contract import SETTINGS
from targets.registry import TARGETS, Target, get_target
from targets.yours import is_user_target, running_url

DEFAULT_MAX_CONNECTIONS = next(f.default for f in dataclasses.fields(Scenario) if f.name == "max_connections")


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    target: str
    users: int
    repeat: int
    variant: tuple[tuple[str, Any], ...] = ()  # the swept values of this cell ([sweep] of the scenario)
    rate: int = 0  # open model: the offered rate, requests/s (users is then 0)
    rtt_ms: float = 0  # the connection path ([network] of the scenario, or --rtt/--tls/--pooler)
    tls: bool = False
    pooler: str = ""  # where PgBouncer sits, for the pgbouncer targets only

    @property
    def id(self) -> str:
        swept = "".join(f".{k}{v}" for k, v in self.variant)
        level = self.scenario.cell_kind.level_id(self)
        return f"{self.scenario.name}.{self.target}{level}{swept}{self.path_suffix}.r{self.repeat}"

    @property
    def path_suffix(self) -> str:
        """The connection path in the id where it is not loopback: `.rtt10.tls.near-app`."""
        pooler = f".{self.pooler}" if self.pooler not in ("", DEFAULT_POOLER) else ""
        return (f".rtt{self.rtt_ms}" if self.rtt_ms else "") + (".tls" if self.tls else "") + pooler

    def path_columns(self) -> dict[str, Any]:
        return {"rtt_ms": self.rtt_ms, "tls": self.tls, "pooler": self.pooler}


# -- planning ------------------------------------------------------------------------------------------
def plan(scenarios: list[Scenario], target_ids: list[str], named: bool = False) -> list[Cell]:
    """Cells in run order: per scenario, level and repeat, every target in turn (so drift hits all alike).
    `named`: the user named the targets, so each scenario takes every one it is meant for (Scenario.selects)."""
    cells = []
    for sc in scenarios:
        for users, rate in sc.cell_kind.levels(sc):
            for variant in sc.variants():
                for repeat in range(1, sc.repeats + 1):
                    cells += [Cell(sc, t, users, repeat, variant, rate) for t in target_ids if sc.selects(t, named)]
    return with_paths(cells)


def with_path_override(scenarios: list[Scenario], path: tuple[Any, Any, Any]) -> list[Scenario]:
    """--rtt, --tls and --pooler, where given, replace every scenario's [network] values."""
    over = {k: v for k, v in zip(("rtt_ms", "tls", "pooler"), path, strict=True) if v is not None}
    return [dataclasses.replace(sc, **over) for sc in scenarios]


def with_paths(cells: list[Cell]) -> list[Cell]:
    """Each cell once per connection path of its scenario (RTT x TLS), a pgbouncer target once per pooler."""
    return [
        dataclasses.replace(c, rtt_ms=rtt, tls=tls, pooler=pooler)
        for c in cells
        for tls, rtt in itertools.product(c.scenario.tls, c.scenario.rtt_ms)
        for pooler in (c.scenario.pooler if TARGETS[c.target].via_pgbouncer else ("",))
    ]


class CellRun:
    """Everything one cell starts, so an interrupt can stop it all."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.sampler: Sampler | None = None

    def stop_all(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        for p in reversed(self.procs):
            stop_process(p, signal.SIGTERM, 10)


PER_CELL_OVERHEAD_S = 1.0


def planned_seconds(cells: list[Cell]) -> float:
    """How long `cells` should take: their load stages plus the per-cell overhead (the progress bar's estimate)."""
    return sum(c.scenario.total_seconds() + PER_CELL_OVERHEAD_S for c in cells)


# -- what cannot be done to what connbench did not start ---------------------------------------------------
def skip_reason(sc: Scenario, target: Target, external_db: bool, rtt_ms: float = 0, tls: bool = False) -> str | None:
    """Why a cell cannot run on a service or a database connbench did not start, or None when it can."""
    if running_url(target):
        if sc.cell_kind.measures_start:
            return "needs to start the target (a --url service is already running)"
        if sc.signals:
            return f"needs to send {sc.signals[0]} to the target (a --url service is not connbench's to signal)"
        if any(a.do == "freeze" for a in sc.actions):
            return "freezes the target's processes (a --url service is not connbench's to signal)"
        if sc.workers > 1:
            return f"starts the target with {sc.workers} worker processes (a --url service is already running)"
        if sc.target_env or any(k in SETTINGS for k in sc.sweep):
            return "sets the target's settings when it starts (a --url service is already running)"
    elif is_user_target(target) and sc.workers > 1 and not target.takes_workers:
        return f"starts the target with {sc.workers} worker processes; its command has no {{workers}} placeholder"
    if sc.idle_drop_s:
        if external_db or rtt_ms or target.via_pgbouncer:
            return "puts a silent-drop middlebox in front of PostgreSQL: only on loopback, without PgBouncer or --dsn"
        reason = middlebox_unavailable()
        if reason:
            return f"puts a silent-drop middlebox in front of PostgreSQL, which {reason}"
    if external_db:
        if any(a.do == "restart-db" for a in sc.actions):
            return "restarts PostgreSQL (--dsn: connbench does not restart a database it did not start)"
        if any(a.do == "terminate" for a in sc.actions):
            return "terminates the target's sessions (--dsn: not done to a database connbench did not start)"
        if sc.max_connections != DEFAULT_MAX_CONNECTIONS or sc.pg_settings:
            changed = ["max_connections"] * (sc.max_connections != DEFAULT_MAX_CONNECTIONS) + list(sc.pg_settings)
            return f"changes PostgreSQL's settings ({', '.join(changed)}; --dsn: not done to an existing database)"
        if rtt_ms or tls:
            return "puts a distance or TLS in front of PostgreSQL (--dsn: not done to an existing database)"
    return None


def applicable(cells: list[Cell], external_db: bool) -> tuple[list[Cell], dict[str, str]]:
    """The cells that can run, and {cell id: why not} for the others ."""
    keep, skipped = [], {}
    for c in cells:
        reason = skip_reason(c.scenario, get_target(c.target), external_db, c.rtt_ms, c.tls)
        if reason:
            skipped[c.id] = reason
        else:
            keep.append(c)
    return keep, skipped
