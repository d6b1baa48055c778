"""Scenario files (benchmarks/scenarios/*.toml): what load to apply, to which targets, with which actions.

A scenario file holds its defaults and one `[profiles.<name>]` table per profile it takes part in; a
profile (smoke, quick, full) is the set of scenarios that have its table. Unknown keys are errors that name
the file and the key, so a typo never silently changes a benchmark.

    description = "closed-loop users, back to back"
    kind = "load"                       # load | cold-start
    targets = ["*"]                     # target ids or strategy names; "*" = every target
    [load]
    users = [1, 8, 32]                  # one cell per level
    warmup = 3                          # seconds excluded from the statistics
    duration = 15                       # measured seconds
    spawn_rate = 0                      # users started per second; 0 = all at once
    stages = [{duration = 5, users = "level"}, {duration = 8, users = 0}]   # optional: replaces the above shape
    [postgres]
    max_connections = 100
    settings = {idle_session_timeout = "3s"}
    [target]
    workers = 1
    env = {CONNBENCH_POOL_MAX = "10"}
    [[actions]]                         # things done to the stack at a time after load start
    at = 8
    do = "restart-db"                   # restart-db | sigterm | sigkill | mark (only logs an event)
    mode = "fast"
    [profiles.smoke]
    users = [4]
    duration = 3
    repeats = 1
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.errors import ConnbenchError
from targets.strategies import STRATEGIES, TARGETS

SCENARIO_DIR = Path(__file__).with_name("scenarios")
PROFILES = ("smoke", "quick", "full")
KINDS = ("load", "cold-start")
ACTIONS = ("restart-db", "sigterm", "sigkill", "mark")
TOP_KEYS = {
    "description",
    "kind",
    "targets",
    "load",
    "postgres",
    "target",
    "actions",
    "profiles",
    "cold_start",
}
LOAD_KEYS = {"users", "warmup", "duration", "spawn_rate", "stages"}
PROFILE_KEYS = LOAD_KEYS | {"repeats", "targets", "actions", "cold_start"}


@dataclass(frozen=True)
class Action:
    at: float
    do: str
    mode: str = "fast"
    label: str = ""  # mark: the event's name in timeseries.csv ("mark:<label>")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    kind: str = "load"
    targets: tuple[str, ...] = ("*",)
    users: tuple[int, ...] = (8,)
    warmup: float = 2.0
    duration: float = 10.0
    spawn_rate: float = 0.0
    stages: tuple[dict[str, Any], ...] = ()
    max_connections: int = 100
    pg_settings: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    target_env: dict[str, str] = field(default_factory=dict)
    actions: tuple[Action, ...] = ()
    repeats: int = 1
    cold_start: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def load_stages(self, level: int) -> list[dict[str, Any]]:
        """The Locust shape for one level: explicit stages, or one stage of warmup + duration."""
        if not self.stages:
            return [{"duration": self.warmup + self.duration, "users": level, "spawn_rate": self.spawn_rate}]
        out = []
        for st in self.stages:
            users = level if st.get("users") == "level" else int(st.get("users", 0))
            out.append({"duration": float(st["duration"]), "users": users, "spawn_rate": st.get("spawn_rate", 0)})
        return out

    def total_seconds(self) -> float:
        if self.kind == "cold-start":
            return 3.0
        return sum(s["duration"] for s in self.load_stages(1))

    def selects(self, target_id: str) -> bool:
        t = TARGETS[target_id]
        return "*" in self.targets or t.id in self.targets or t.strategy in self.targets


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ConnbenchError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def _typed(where: str, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConnbenchError(f"{where}: key {key!r} must be {kind.__name__}, got {value!r}")
    return value


def parse_scenario(path: Path, profile: str) -> Scenario | None:
    """The scenario of `path` as `profile` sets it, or None when the file has no table for that profile."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConnbenchError(f"{where}: not valid TOML ({exc})") from None
    _check_keys(where, data, TOP_KEYS)
    profiles = data.get("profiles", {})
    for name, table in profiles.items():
        if name not in PROFILES:
            raise ConnbenchError(f"{where}: unknown profile {name!r} (profiles: {', '.join(PROFILES)})")
        _check_keys(f"{where} [profiles.{name}]", table, PROFILE_KEYS)
    if profile not in profiles:
        return None
    load = dict(data.get("load", {}))
    _check_keys(f"{where} [load]", load, LOAD_KEYS)
    over = dict(profiles[profile])
    load.update({k: v for k, v in over.items() if k in LOAD_KEYS})
    pg = data.get("postgres", {})
    _check_keys(f"{where} [postgres]", pg, {"max_connections", "settings"})
    target = data.get("target", {})
    _check_keys(f"{where} [target]", target, {"workers", "env"})
    kind = data.get("kind", "load")
    if kind not in KINDS:
        raise ConnbenchError(f"{where}: key 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    targets = tuple(over.get("targets", data.get("targets", ["*"])))
    for t in targets:
        if t != "*" and t not in TARGETS and t not in STRATEGIES:
            raise ConnbenchError(f"{where}: key 'targets' names unknown target or strategy {t!r}")
    actions = []
    for i, a in enumerate(over.get("actions", data.get("actions", []))):
        _check_keys(f"{where} [[actions]] #{i + 1}", a, {"at", "do", "mode", "label"})
        if a.get("do") not in ACTIONS:
            raise ConnbenchError(f"{where}: key 'do' of action #{i + 1} must be one of {', '.join(ACTIONS)}")
        at = _typed(where, "at", a.get("at"), float)
        actions.append(Action(at, a["do"], str(a.get("mode", "fast")), str(a.get("label", ""))))
    users = load.get("users", [8])
    if not isinstance(users, list) or not users or not all(isinstance(u, int) and u > 0 for u in users):
        raise ConnbenchError(f"{where}: key 'users' must be a non-empty list of positive integers, got {users!r}")
    stages = load.get("stages", [])
    for i, st in enumerate(stages):
        _check_keys(f"{where} stages #{i + 1}", st, {"duration", "users", "spawn_rate"})
        if "duration" not in st:
            raise ConnbenchError(f"{where}: stage #{i + 1} lacks key 'duration'")
    repeats = _typed(where, "repeats", over.get("repeats", 1), int)
    return Scenario(
        name=path.stem,
        description=str(data.get("description", "")),
        kind=kind,
        targets=targets,
        users=tuple(users),
        warmup=_typed(where, "warmup", load.get("warmup", 2.0), float),
        duration=_typed(where, "duration", load.get("duration", 10.0), float),
        spawn_rate=_typed(where, "spawn_rate", load.get("spawn_rate", 0.0), float),
        stages=tuple(stages),
        max_connections=_typed(where, "max_connections", pg.get("max_connections", 100), int),
        pg_settings={k: str(v) for k, v in pg.get("settings", {}).items()},
        workers=_typed(where, "workers", target.get("workers", 1), int),
        target_env={k: str(v) for k, v in target.get("env", {}).items()},
        actions=tuple(actions),
        repeats=max(1, repeats),
        cold_start={**data.get("cold_start", {}), **over.get("cold_start", {})},
        path=where,
    )


def available(directory: Path = SCENARIO_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_profile(profile: str, names: list[str] | None = None, directory: Path = SCENARIO_DIR) -> list[Scenario]:
    """The scenarios of a profile (optionally only `names`), in file-name order."""
    if profile not in PROFILES:
        raise ConnbenchError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    known = available(directory)
    for n in names or []:
        if n not in known:
            raise ConnbenchError(f"unknown scenario {n!r}; scenarios: {', '.join(known)}")
    out = []
    for name in names or known:
        sc = parse_scenario(directory / f"{name}.toml", profile)
        if sc is not None:
            out.append(sc)
    if not out:
        raise ConnbenchError(f"profile {profile!r} has none of the scenarios {', '.join(names or known)}")
    return out


__all__ = ["Action", "Scenario", "available", "load_profile", "parse_scenario"]
