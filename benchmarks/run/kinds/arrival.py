"""Kind "arrival": the open model, requests due at a rate however slowly the target answers (Locust's
`arrival-<target>` users, benchmarks/load/users.py). One cell per rate of [load] rates; the load is warm-up +
duration at that rate, or the scenario's stages ({duration, rps = "level" | n, ramp})."""

from __future__ import annotations

from benchmarks.errors import ConnbenchError
from benchmarks.load.plan import Stage
from benchmarks.run.cells import Cell
from benchmarks.run.locustcell import LocustKind
from benchmarks.run.scenario import Scenario


class Arrival(LocustKind):
    name = "arrival"
    open = True

    def check(self, sc: Scenario, where: str) -> Scenario:
        if not sc.rates or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in sc.rates):
            rates = list(sc.rates)
            raise ConnbenchError(f"{where}: key 'rates' must be a non-empty list of positive integers, got {rates!r}")
        return sc

    def levels(self, sc: Scenario) -> list[tuple[int, int]]:
        return [(0, r) for r in sc.rates]

    def level_id(self, cell: Cell) -> str:
        return f".rps{cell.rate}"

    def stages(self, sc: Scenario, level: int) -> tuple[Stage, ...]:
        if not sc.stages:
            return (Stage(sc.warmup + sc.duration, rps=level),)
        return tuple(
            Stage(
                float(st["duration"]),
                rps=level if st.get("rps", "level") == "level" else float(st["rps"]),
                ramp=bool(st.get("ramp")),
            )
            for st in sc.stages
        )


KIND = Arrival()
