"""Kind "load": closed-loop users, each sending its next GET /db when the last one answered (steady, spike and
the fault scenarios). One cell per users level; the load is warm-up + duration at that level, or the
scenario's stages with "level" standing for it."""

from __future__ import annotations

from benchmarks.load.plan import Stage
from benchmarks.run.locustcell import LocustKind
from benchmarks.run.scenario import Scenario


class ClosedLoad(LocustKind):
    name = "load"

    def stages(self, sc: Scenario, level: int) -> tuple[Stage, ...]:
        if not sc.stages:
            return (Stage(sc.warmup + sc.duration, users=level, spawn_rate=sc.spawn_rate),)
        return tuple(
            Stage(
                float(st["duration"]),
                users=level if st.get("users") == "level" else int(st.get("users", 0)),
                spawn_rate=float(st.get("spawn_rate", 0)),
            )
            for st in sc.stages
        )


KIND = ClosedLoad()
