"""The `yours` family: a service connbench did not write, described by the user for one run.

Two kinds, both joining the run's registry (targets/registry.py `build_registry`) beside the families':
- a target file (`connbench run --target-file my.toml`): the command that starts the service, which
  connbench then starts, signals and stops in every scenario like its own targets;
- a URL (`--url NAME=URL`, `--app-name NAME=APPNAME`): a service already running, measured by the load
  scenarios only.
PostgreSQL recognises the service's connections by its `application_name` or by its role; `conn_key` says
which, and the sampler counts under that key. A process of the run that connbench starts (Locust builds one
user class per target) builds the same registry from the targets' JSON: `to_json` in the parent,
`registry_from_json` in the child.

    # my.toml: one target per file; README "Measure your own service" documents every key
    name = "mine"                                   # the target id in results (letters, digits, - . _)
    command = ["./my-service", "--port", "{port}"]  # {port}, {dsn} and {workers} are filled in; a string is
                                                    # split like a shell would
    env = {DATABASE_URL = "{dsn}"}                  # optional; PORT and DATABASE_URL are always set
    ready = "/ready"                                # readiness path: 200 once the service is ready
    application_name = "my-service"                 # or: role = "my_service_role"
    strategy = "pool"                               # optional label for the report (default "yours")
    description = "..."                             # optional
    session_per_request = false                     # optional: opens a session per request
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from benchmarks.errors import ConnbenchError
from targets import registry
from targets.registry import BUILT_IN, Registry, Target, build_registry

FAMILY = "yours"
ENV = "CONNBENCH_USER_TARGETS"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
FILE_KEYS = {
    "name", "command", "env", "ready", "application_name", "role", "strategy", "description",
    "session_per_request", "thresholds",
}  # fmt: skip


@dataclass(frozen=True)
class UserTarget(Target):
    family: str = field(default=FAMILY, compare=False)
    command: tuple[str, ...] = field(default=(), compare=False)  # empty: a service already running
    env: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    url: str = field(default="", compare=False)  # the running service's base URL (no command)
    ready: str = field(default="/ready", compare=False)
    application_name: str = field(default="", compare=False)
    role: str = field(default="", compare=False)
    source: str = field(default="", compare=False)  # the target file, or "--url"
    thresholds: tuple[str, ...] = field(default=(), compare=False)  # checked by `connbench run` on its cells

    @property
    def conn_key(self) -> str:
        return f"role:{self.role}" if self.role else self.application_name

    @property
    def ready_path(self) -> str:
        return self.ready

    @property
    def recognised_by(self) -> str:
        """How PostgreSQL tells its connections apart, for messages."""
        return f"role {self.role!r}" if self.role else f"application_name {self.application_name!r}"

    @property
    def started(self) -> bool:
        """Does connbench start (and may signal) this service?"""
        return bool(self.command)

    @property
    def takes_workers(self) -> bool:
        return any("{workers}" in part for part in (*self.command, *(v for _, v in self.env)))

    def launch(self, port: int, dsn: str, workers: int) -> tuple[list[str], dict[str, str]]:
        """The command and its extra environment for one start, placeholders filled in."""

        def fill(text: str) -> str:
            return text.replace("{port}", str(port)).replace("{dsn}", dsn).replace("{workers}", str(workers))

        env = {"PORT": str(port), "DATABASE_URL": dsn, **{k: fill(v) for k, v in self.env}}
        return [fill(part) for part in self.command], env


def _fail(where: str, message: str) -> ConnbenchError:
    return ConnbenchError(f"{where}: {message}")


def _check_name(where: str, name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _fail(where, f"name must be letters, digits, '-', '.' or '_' (at most 63), got {name!r}")
    if name in BUILT_IN:
        raise _fail(where, f"name {name!r} is a built-in target; choose another name")
    return name


def _string(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"key {key!r} must be a non-empty string, got {value!r}")
    return value


def load_target_file(path: Path) -> UserTarget:
    """The target a file describes; a typo or a missing key names the file and the key."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise _fail(where, f"cannot read the target file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail(where, f"not valid TOML ({exc})") from None
    for key in data:
        if key not in FILE_KEYS:
            raise _fail(where, f"unknown key {key!r} (allowed: {', '.join(sorted(FILE_KEYS))})")
    for key in ("name", "command"):
        if key not in data:
            raise _fail(where, f"missing key {key!r}")
    name = _check_name(where, data["name"])
    command = data["command"]
    if isinstance(command, str):
        command = shlex.split(command)
    if not isinstance(command, list) or not command or not all(isinstance(c, str) and c for c in command):
        raise _fail(where, f"key 'command' must be a string or a non-empty list of strings, got {data['command']!r}")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str | int | float) for v in env.values()):
        raise _fail(where, f"key 'env' must be a table of strings, got {env!r}")
    given = {k: _string(where, k, data[k]) for k in ("application_name", "role") if k in data}
    if len(given) != 1:
        raise _fail(where, "give one of 'application_name' or 'role' (how PostgreSQL recognises its connections)")
    ready = _string(where, "ready", data.get("ready", "/ready"))
    if not ready.startswith("/"):
        raise _fail(where, f"key 'ready' must be a path starting with '/', got {ready!r}")
    thresholds = data.get("thresholds", [])
    if not isinstance(thresholds, list) or not all(isinstance(t, str) and t for t in thresholds):
        raise _fail(where, f"key 'thresholds' must be a list of strings, got {thresholds!r}")
    spr = data.get("session_per_request", False)
    if not isinstance(spr, bool):
        raise _fail(where, f"key 'session_per_request' must be true or false, got {spr!r}")
    return UserTarget(
        id=name,
        strategy=_string(where, "strategy", data.get("strategy", FAMILY)),
        driver="",
        summary=str(data.get("description", "")),
        via_pgbouncer=False,
        session_per_request=spr,
        command=tuple(command),
        env=tuple((str(k), str(v)) for k, v in env.items()),
        ready=ready,
        application_name=given.get("application_name", ""),
        role=given.get("role", ""),
        source=where,
        thresholds=tuple(thresholds),
    )


def _pairs(option: str, values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConnbenchError(f"{option} expects NAME=VALUE, got {item!r}")
        if name in out:
            raise ConnbenchError(f"{option} names {name!r} twice")
        out[name] = value
    return out


def url_targets(urls: list[str], app_names: list[str]) -> list[UserTarget]:
    """--url NAME=URL and --app-name NAME=APPNAME: services already running (default app name: connbench:NAME)."""
    by_url = _pairs("--url", urls)
    by_app = _pairs("--app-name", app_names)
    for name in by_app:
        if name not in by_url:
            raise ConnbenchError(f"--app-name names {name!r}, which no --url names")
    out = []
    for name, url in by_url.items():
        _check_name("--url", name)
        if not re.match(r"^https?://[^/\s]+", url):
            raise ConnbenchError(f"--url {name}={url}: not an http:// or https:// URL")
        app = by_app.get(name, f"connbench:{name}")
        role = app.removeprefix("role:") if app.startswith("role:") else ""
        out.append(
            UserTarget(
                id=name, strategy=FAMILY, driver="", summary=f"a running service at {url}", via_pgbouncer=False,
                session_per_request=False, url=url.rstrip("/"), application_name="" if role else app, role=role,
                source="--url",
            )
        )  # fmt: skip
    return out


def run_registry(targets: list[UserTarget]) -> Registry:
    """The registry of a run with the user's `targets` (a name given twice is one line)."""
    names = [t.id for t in targets]
    for name in names:
        if names.count(name) > 1:
            raise ConnbenchError(f"two targets are named {name!r}")
    return build_registry(targets)


def to_json(targets: list[UserTarget]) -> str:
    """The user's targets for a process the run starts (`registry_from_json` there)."""
    return json.dumps([asdict(t) for t in targets])


def from_json(items: list[dict[str, Any]]) -> list[UserTarget]:
    return [
        UserTarget(
            **{
                **d,
                "command": tuple(d["command"]),
                "env": tuple(tuple(p) for p in d["env"]),
                "thresholds": tuple(d.get("thresholds", ())),
            }
        )
        for d in items
    ]


def registry_from_json(text: str) -> Registry:
    """The run's registry in a process the run started, from `to_json`'s text ("" or "[]": none)."""
    return run_registry(from_json(json.loads(text)) if text.strip() else [])


def user_targets(reg: Registry) -> list[UserTarget]:
    """The user's targets of a registry, in order."""
    return [t for t in reg.values() if isinstance(t, UserTarget)]


def register(targets: list[UserTarget]) -> None:
    """Run this process with the user's targets (once it knows them), keeping those it already runs with."""
    run_registry(targets)  # a name given twice is one line
    known = {t.id: t for t in user_targets(registry.current())}
    registry.use(run_registry(list({**known, **{t.id: t for t in targets}}.values())))


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process this one starts that must know the run's targets (Locust, whose user
    classes exist at import): `base` (default: this process's) with the user's targets as JSON in ENV."""
    env = dict(os.environ if base is None else base)
    env.pop(ENV, None)
    if mine := user_targets(registry.current()):
        env[ENV] = to_json(mine)
    return env


def register_from_env() -> list[UserTarget]:
    """In a process connbench started (Locust): the run's user targets, from CONNBENCH_USER_TARGETS."""
    reg = registry_from_json(os.environ.get(ENV, ""))
    registry.use(reg)
    return user_targets(reg)


def is_user_target(target: Target) -> TypeGuard[UserTarget]:
    return isinstance(target, UserTarget)


def running_url(target: Target) -> str:
    """The URL of a service already running (--url), or "" for a target connbench starts."""
    return target.url if isinstance(target, UserTarget) else ""
