"""Scenario files (benchmarks/scenarios/*.toml): what load to apply, to which targets, with which actions.

A scenario file holds its defaults and one `[profiles.<name>]` table per profile it takes part in; a
profile (smoke, quick, full) is the set of scenarios that have its table. Unknown keys are errors that name
the file and the key, so a typo never silently changes a benchmark.

    description = "closed-loop users, back to back"
    kind = "load"                       # a cell kind: a module of benchmarks/run/kinds/ (load, cold-start, ...)
    targets = ["*"]                     # target ids, strategy or family names; "*" = every target
    [load]
    users = [1, 8, 32]                  # one cell per level
    warmup = 3                          # seconds excluded from the statistics
    duration = 15                       # measured seconds
    spawn_rate = 0                      # users started per second; 0 = all at once
    stages = [{duration = 5, users = "level"}, {duration = 8, users = 0}]   # optional: replaces the above shape
    params = {work_ms = 50}             # GET /db parameters (targets/app.py DB_PARAMS)
    [sweep]                             # one cell per combination; a target setting or a /db parameter
    pool_max = [1, 4, 16]               # -> CONNBENCH_POOL_MAX; the cell id gains ".pool_max4"
    hold = [1, 0]
    [postgres]
    max_connections = 100
    settings = {idle_session_timeout = "3s"}
    [target]
    workers = 1
    env = {CONNBENCH_POOL_MAX = "10"}
    [network]                           # the connection path; --rtt/--tls/--pooler replace it for a run
    rtt_ms = [0, 10]                    # one set of cells per RTT added to the database side (ms)
    tls = [false, true]                 # and per TLS mode
    pooler = ["near-db", "near-app"]    # the pgbouncer targets once per place of PgBouncer
    idle_drop_s = 3                     # a middlebox silently drops connections idle 3 s (root; loopback only)
    [[actions]]                         # things done to the stack at a time after load start
    at = 8
    do = "restart-db"                   # restart-db | terminate (the target's sessions) | sigterm | sigkill | mark
    mode = "fast"                       # | restart-pooler | pause-pooler | resume-pooler | freeze | thaw
                                        # | new-instance
    [profiles.smoke]
    users = [4]
    duration = 3
    repeats = 1
    network = {rtt_ms = [10]}

Open-model load (kind "arrival": one cell per rate; kind "capacity": one search per target):

    kind = "arrival"
    [load]
    rates = [100, 400]                  # requests/s, one cell per level (instead of users)
    arrival = "poisson"                 # poisson | uniform (a fixed interval)
    max_senders = 100                   # requests in flight at most; one due beyond is dropped
    stages = [{duration = 3, rps = "level", ramp = true}, {duration = 5, rps = "level"}]   # optional
    [capacity]                          # kind "capacity" (benchmarks/load/plan.py CapacitySearch)
    slo_ms = 50                         # p99 from the due time must stay at or under this
    budget = 30                         # seconds of search per target
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.errors import ConnbenchError
from benchmarks.load.arrival import ARRIVALS
from benchmarks.load.plan import CapacitySearch
from benchmarks.run import kinds
from benchmarks.run.thresholds import parse_list
from targets.contract import DB_PARAMS, SETTINGS, Settings
from targets.python.strategies import STRATEGIES
from targets.registry import TARGETS
from targets.yours import FAMILY as YOURS

SCENARIO_DIR = Path(__file__).parents[1] / "scenarios"
FAMILY_NAMES = {t.family for t in TARGETS.values()}  # "prisma" in a targets list: every prisma target
PROFILES = ("smoke", "quick", "full")
CAPACITY_KEYS = {f.name for f in dataclasses.fields(CapacitySearch)}
SIGNALS = ("sigterm", "sigkill")  # the actions that signal the target itself
POOLER_ACTIONS = ("restart-pooler", "pause-pooler", "resume-pooler")  # the cell's PgBouncer (its console)
# terminate: pg_terminate_backend on the target's sessions; freeze/thaw: SIGSTOP/SIGCONT its process group
# new-instance: another process of the target starts (as a platform scales out), serves a few requests and stops
ACTIONS = ("restart-db", "terminate", *SIGNALS, *POOLER_ACTIONS, "freeze", "thaw", "new-instance", "mark")
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
    "sweep",
    "capacity",
    "network",
    "thresholds",
}
LOAD_KEYS = {"users", "warmup", "duration", "spawn_rate", "stages", "params", "rates", "arrival", "max_senders"}
PROFILE_KEYS = LOAD_KEYS | {"repeats", "targets", "actions", "cold_start", "sweep", "capacity", "network", "thresholds"}
NETWORK_KEYS = {"rtt_ms", "tls", "pooler", "idle_drop_s"}
SWEEPABLE = set(SETTINGS) | set(DB_PARAMS)  # target settings (README's table) and /db parameters


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
    targets: tuple[str, ...] = ("*",)  # the profile's choice (its `targets`, else the file's)
    relevant: tuple[str, ...] = ("*",)  # the file's top-level `targets`: where the scenario means something
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
    params: dict[str, Any] = field(default_factory=dict)  # /db parameters of every cell
    sweep: dict[str, list[Any]] = field(default_factory=dict)  # name -> values, one cell per combination
    rates: tuple[int, ...] = ()  # arrival: requests/s, one cell per level
    arrival: str = "poisson"
    max_senders: int = 100
    capacity: dict[str, float] = field(default_factory=dict)  # [capacity] (kind "capacity" fills the defaults)
    # [network]: the connection path, one set of cells per RTT and TLS mode; PgBouncer targets once per pooler
    rtt_ms: tuple[float, ...] = (0,)
    tls: tuple[bool, ...] = (False,)
    pooler: tuple[str, ...] = ("near-db",)
    idle_drop_s: float = 0  # a middlebox silently drops connections idle this long (0: none; stack/middlebox.py)
    thresholds: tuple[str, ...] = ()  # what must hold in this scenario's valid cells (benchmarks/run/thresholds.py)

    def variants(self) -> list[tuple[tuple[str, Any], ...]]:
        """Every combination of the swept values, as (name, value) pairs in the file's order."""
        names = list(self.sweep)
        return [tuple(zip(names, values, strict=True)) for values in itertools.product(*self.sweep.values())]

    @property
    def signals(self) -> list[str]:
        """The signals its actions send to the target, in order."""
        return [a.do for a in self.actions if a.do in SIGNALS]

    def target_env_for(self, variant: tuple[tuple[str, Any], ...]) -> dict[str, str]:
        """The target's environment in one variant: the scenario's, with the swept settings on top."""
        return {**self.target_env, **{SETTINGS[k].env: str(v) for k, v in variant if k in SETTINGS}}

    def db_params_for(self, variant: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
        """GET /db's parameters in one variant."""
        return {**self.params, **{k: v for k, v in variant if k in DB_PARAMS}}

    @property
    def cell_kind(self) -> kinds.CellKind:
        """The kind of its cells (benchmarks/run/kinds/): how they are planned and run."""
        return kinds.get(self.kind)

    def total_seconds(self) -> float:
        """How long one cell applies load."""
        return self.cell_kind.seconds(self)

    def selects(self, target_id: str, named: bool = False) -> bool:
        """Whether the scenario runs `target_id`: one of the profile's targets, or, when the user named the
        targets (`named`, --targets), any target the scenario is meant for (the profile's list only trims the
        default run). A user's service (targets/yours.py) takes part in every scenario: its strategy is its own."""
        t = TARGETS[target_id]
        if t.family == YOURS:
            return True
        among = self.relevant if named else self.targets
        return "*" in among or t.id in among or t.strategy in among or t.family in among


def _check_keys(where: str, table: Any, allowed: set[str]) -> None:
    if not isinstance(table, dict):
        raise ConnbenchError(f"{where}: must be a table, got {table!r}")
    for key in table:
        if key not in allowed:
            raise ConnbenchError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def _typed(where: str, key: str, value: Any, kind: type[Any], minimum: float | None = None) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConnbenchError(f"{where}: key {key!r} must be {kind.__name__}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConnbenchError(f"{where}: key {key!r} must be at least {minimum:g}, got {value!r}")
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
    _check_keys(f"{where} [load]", data.get("load", {}), LOAD_KEYS)
    load = dict(data.get("load", {}))
    over = dict(profiles[profile])
    load.update({k: v for k, v in over.items() if k in LOAD_KEYS})
    pg = data.get("postgres", {})
    _check_keys(f"{where} [postgres]", pg, {"max_connections", "settings"})
    target = data.get("target", {})
    _check_keys(f"{where} [target]", target, {"workers", "env"})
    kind = data.get("kind", "load")
    cell_kind = kinds.get(kind, where)
    relevant = tuple(data.get("targets", ["*"]))
    targets = tuple(over.get("targets", relevant))
    for t in {*relevant, *targets}:
        if t != "*" and t not in TARGETS and t not in STRATEGIES and t not in FAMILY_NAMES:
            raise ConnbenchError(f"{where}: key 'targets' names unknown target, strategy or family {t!r}")
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
        _check_keys(f"{where} stages #{i + 1}", st, {"duration", "users", "spawn_rate", "rps", "ramp"})
        if "duration" not in st:
            raise ConnbenchError(f"{where}: stage #{i + 1} lacks key 'duration'")
        _typed(f"{where} stage #{i + 1}", "duration", st["duration"], float, 0)
    repeats = _typed(where, "repeats", over.get("repeats", 1), int, 1)
    _check_keys(f"{where} [target.env]", target.get("env", {}), set(target.get("env", {})))
    try:
        Settings.from_env({k: str(v) for k, v in target.get("env", {}).items()})
    except ValueError as exc:
        raise ConnbenchError(f"{where} [target.env]: {exc}") from None
    scenario = Scenario(
        name=path.stem,
        description=str(data.get("description", "")),
        kind=kind,
        targets=targets,
        relevant=relevant,
        users=tuple(users),
        warmup=_typed(where, "warmup", load.get("warmup", 2.0), float, 0),
        duration=_typed(where, "duration", load.get("duration", 10.0), float, 0.5),
        spawn_rate=_typed(where, "spawn_rate", load.get("spawn_rate", 0.0), float, 0),
        stages=tuple(stages),
        max_connections=_typed(where, "max_connections", pg.get("max_connections", 100), int, 5),
        pg_settings={k: str(v) for k, v in pg.get("settings", {}).items()},
        workers=_typed(where, "workers", target.get("workers", 1), int, 1),
        target_env={k: str(v) for k, v in target.get("env", {}).items()},
        actions=tuple(actions),
        repeats=max(1, repeats),
        cold_start={**data.get("cold_start", {}), **over.get("cold_start", {})},
        path=where,
        params=_named_numbers(f"{where} [load] params", load.get("params", {}), set(DB_PARAMS)),
        sweep=_sweep(where, over.get("sweep", data.get("sweep", {})), target.get("env", {})),
        thresholds=parse_list(where, over.get("thresholds", data.get("thresholds", []))),
        **_open_load(where, load, {**data.get("capacity", {}), **over.get("capacity", {})}),
        **_network(f"{where} [network]", {**data.get("network", {}), **over.get("network", {})}),
    )
    return cell_kind.check(scenario, where)


def _network(where: str, table: Any) -> dict[str, Any]:
    """[network]: rtt_ms = [0, 10], tls = [false, true], pooler = ["near-db", "near-app"] (lists or one value)."""
    from benchmarks.stack.network import parse_poolers, parse_rtts, parse_tls

    if not isinstance(table, dict):
        raise ConnbenchError(f"{where}: must be a table, got {table!r}")
    _check_keys(where, table, NETWORK_KEYS)
    out: dict[str, Any] = {}
    for key, parse in (("rtt_ms", parse_rtts), ("tls", parse_tls), ("pooler", parse_poolers)):
        if key in table:
            value = table[key] if isinstance(table[key], list) else [table[key]]
            if key == "tls" and not all(isinstance(v, bool) for v in value):
                raise ConnbenchError(f"{where}: key 'tls' must be true, false or a list of them, got {table[key]!r}")
            try:
                out[key] = parse(value)
            except ConnbenchError as exc:
                raise ConnbenchError(f"{where}: key {key!r}: {exc}") from None
    if "idle_drop_s" in table:
        out["idle_drop_s"] = _typed(where, "idle_drop_s", table["idle_drop_s"], float, 0)
    return out


def _open_load(where: str, load: dict[str, Any], capacity: Any) -> dict[str, Any]:
    """The open-model settings: rates (the arrival kind checks them), arrival, max_senders, and [capacity]."""
    rates = load.get("rates", [])
    if not isinstance(rates, list):
        raise ConnbenchError(f"{where}: key 'rates' must be a non-empty list of positive integers, got {rates!r}")
    arrival = load.get("arrival", "poisson")
    if arrival not in ARRIVALS:
        raise ConnbenchError(f"{where}: key 'arrival' must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    _check_keys(f"{where} [capacity]", capacity, CAPACITY_KEYS)
    return {
        "rates": tuple(rates),
        "arrival": arrival,
        "max_senders": _typed(where, "max_senders", load.get("max_senders", 100), int, 1),
        "capacity": {k: _typed(f"{where} [capacity]", k, v, float, 0) for k, v in capacity.items()},
    }


def _named_numbers(where: str, table: Any, allowed: set[str]) -> dict[str, Any]:
    _check_keys(where, table, allowed)
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConnbenchError(f"{where}: key {key!r} must be a number >= 0, got {value!r}")
    return dict(table)


def _sweep(where: str, table: Any, env: dict[str, Any]) -> dict[str, list[Any]]:
    """[sweep]: each key a target setting or a /db parameter, each value a non-empty list of numbers."""
    _check_keys(f"{where} [sweep]", table, SWEEPABLE)
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise ConnbenchError(f"{where} [sweep]: key {key!r} must be a non-empty list, got {values!r}")
        for v in values:
            _named_numbers(f"{where} [sweep]", {key: v}, SWEEPABLE)
            if key in SETTINGS:
                try:
                    Settings.from_env({**{k: str(x) for k, x in env.items()}, SETTINGS[key].env: str(v)})
                except ValueError as exc:
                    raise ConnbenchError(f"{where} [sweep]: {exc}") from None
    return {k: list(v) for k, v in table.items()}


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
