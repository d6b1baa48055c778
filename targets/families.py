"""Target families: one folder under targets/ with a `family.toml` each, the Python targets too.

A manifest says what the family needs on this machine (`requires`: executables on PATH), how to build it
(`[build]`: an `install` command run in the folder when its `install_inputs` change, e.g. `npm ci` from the
lockfile, then the `steps`, once per change of the hash of all inputs; the result is cached under the
folder's `build/`), how to start one target (`[serve] command`, exec'd in the folder with
`{host}`, `{port}` and `{python}` (the interpreter running connbench) filled in and CONNBENCH_* in the
environment, so signals reach the target itself;
`ca_command` instead while connbench's PostgreSQL speaks TLS, see DB_CA_ENV; or `[serve] app`, an ASGI app
factory `connbench serve` runs with uvicorn in its own process), which targets it has (`[strategies.<name>]`
tables: the target id is `<family>-<name>`; or `targets = "module:function"`, a function of the family's
name returning its targets, for a family whose strategies are classes, as the python family's
`<strategy>-<driver>`) and which stage of targets/Dockerfile runs its targets (`[docker] stage`).
targets/registry.py reads every family into the one registry of targets.

Code shared by several families that is not itself a family (no family.toml) lives beside them, e.g.
targets/node-shared/ (a family's build lists such files among its `inputs` as `../node-shared/...`).

Building is lazy: the first command that needs a family (`connbench targets`, `run`, `up`, `serve`) builds
it with a progress line; `connbench build` builds (or rebuilds) every family up front. A failed build is
remembered for the same inputs, so the family is listed as not runnable with one line until the inputs
change or `connbench build` retries. A family with nothing to build (python) is always ready.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from targets.target import Target

ROOT = Path(__file__).parent
PYTHON = "python"
MANIFEST = "family.toml"
STAMP = ".connbench-build.json"
TOP_KEYS = {"description", "runtime", "driver", "requires", "build", "serve", "strategies", "targets", "docker"}
BUILD_KEYS = {"install", "install_inputs", "inputs", "env", "steps"}
SERVE_KEYS = {"command", "ca_command", "workers", "app", "exit_grace_s"}
DOCKER_KEYS = {"stage"}
# Set by connbench while its PostgreSQL speaks TLS: the PEM file of the throw-away certificate (named
# server.crt, in a folder of its own). A family whose client verifies certificates has no `sslmode=require`
# without verification, so its `ca_command` (with `{ca_dir}`: that folder) trusts the certificate instead.
DB_CA_ENV = "CONNBENCH_DB_CA"
DEFAULT_EXIT_GRACE_S = 30.0
STRATEGY_KEYS = {"summary", "session_per_request", "via_pgbouncer", "driver"}


@dataclass(frozen=True)
class Family:
    name: str
    path: Path
    description: str
    runtime: str
    driver: str
    requires: tuple[str, ...]
    install: tuple[str, ...]
    install_inputs: tuple[str, ...]
    inputs: tuple[str, ...]
    build_env: dict[str, str]
    steps: tuple[tuple[str, ...], ...]
    command: tuple[str, ...]  # exec'd by `connbench serve` (empty: `app`)
    ca_command: tuple[str, ...]  # the command while DB_CA_ENV is set (empty: `command` then too)
    app: str  # "module:factory" of an ASGI app `connbench serve` runs with uvicorn (empty: `command`)
    workers: bool  # the command serves CONNBENCH_WORKERS processes itself
    exit_grace_s: float  # after a cell's load, how long SIGTERM may take before SIGKILL (its exit hook's time)
    docker_stage: str  # the stage of targets/Dockerfile whose image runs the family's targets ("": none)
    targets: tuple[Target, ...]

    @property
    def build_dir(self) -> Path:
        return self.path / "build"


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def _strings(where: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: key {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


def _attribute(where: str, key: str, value: Any) -> Any:
    """The object `module:name` names (a manifest's `targets` or `[serve] app`)."""
    module, sep, name = str(value).partition(":")
    if not sep:
        raise ValueError(f'{where}: key {key!r} must be "module:name", got {value!r}')
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{where}: key {key!r} names {value!r}, which cannot be loaded ({exc})") from None


def _manifest_targets(where: str, name: str, driver: str, data: dict[str, Any]) -> list[Target]:
    if "targets" in data:
        if data.get("strategies"):
            raise ValueError(f"{where}: give either 'targets' or [strategies.<name>] tables, not both")
        return list(_attribute(where, "targets", data["targets"])(name))
    targets = []
    for strategy, table in data.get("strategies", {}).items():
        _check_keys(f"{where} [strategies.{strategy}]", table, STRATEGY_KEYS)
        tid = f"{name}-{strategy}"
        summary, spr = str(table.get("summary", "")), bool(table.get("session_per_request", False))
        pgb, own_driver = bool(table.get("via_pgbouncer", False)), str(table.get("driver", driver))
        targets.append(Target(tid, tid, own_driver, summary, pgb, spr, name))
    return targets


def load_family(path: Path) -> Family:
    """The family of `path` (a folder with family.toml); a typo in the manifest names file and key."""
    where = str(path / MANIFEST)
    try:
        data = tomllib.loads((path / MANIFEST).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where}: not valid TOML ({exc})") from None
    _check_keys(where, data, TOP_KEYS)
    build, serve, docker = data.get("build", {}), data.get("serve", {}), data.get("docker", {})
    _check_keys(f"{where} [build]", build, BUILD_KEYS)
    _check_keys(f"{where} [serve]", serve, SERVE_KEYS)
    _check_keys(f"{where} [docker]", docker, DOCKER_KEYS)
    if ("command" in serve) == ("app" in serve):
        raise ValueError(f"{where}: [serve] needs a command or an app (one of them)")
    name, driver = path.name, str(data.get("driver", data.get("runtime", path.name)))
    grace = serve.get("exit_grace_s", DEFAULT_EXIT_GRACE_S)
    if not isinstance(grace, int | float) or isinstance(grace, bool) or grace <= 0:
        raise ValueError(f"{where} [serve]: key 'exit_grace_s' must be a number of seconds > 0, got {grace!r}")
    targets = _manifest_targets(where, name, driver, data)
    if not targets:
        raise ValueError(f"{where}: no [strategies.<name>] table")
    return Family(
        name=name,
        path=path,
        description=str(data.get("description", "")),
        runtime=str(data.get("runtime", name)),
        driver=driver,
        requires=_strings(where, "requires", data.get("requires", [])),
        install=_strings(where, "install", build.get("install", [])),
        install_inputs=_strings(where, "install_inputs", build.get("install_inputs", [])),
        inputs=_strings(where, "inputs", build.get("inputs", [])),
        build_env={k: str(v) for k, v in build.get("env", {}).items()},
        steps=tuple(_strings(where, "steps", step) for step in build.get("steps", [])),
        command=_strings(where, "command", serve.get("command", [])),
        ca_command=_strings(where, "ca_command", serve.get("ca_command", [])),
        app=str(serve.get("app", "")),
        workers=bool(serve.get("workers", False)),
        exit_grace_s=float(grace),
        docker_stage=str(docker.get("stage", "")),
        targets=tuple(targets),
    )


def discover(root: Path = ROOT) -> dict[str, Family]:
    """Every family folder under `root`, by name: python first, then the others in folder order."""
    found = {p.parent.name: load_family(p.parent) for p in sorted(root.glob(f"*/{MANIFEST}"))}
    return dict(sorted(found.items(), key=lambda item: item[0] != PYTHON))


FAMILIES: dict[str, Family] = discover()


def exit_grace_s(target: Target) -> float:
    """How long a target may take to exit on SIGTERM once its load is over (a user's target: the default)."""
    family = FAMILIES.get(target.family)
    return family.exit_grace_s if family else DEFAULT_EXIT_GRACE_S


def target(target_id: str) -> Target:
    """The target of a family by id (targets/registry.py has the registry, with the user's targets)."""
    return next(t for f in FAMILIES.values() for t in f.targets if t.id == target_id)


# -- building ------------------------------------------------------------------------------------------
def _hash(family: Family, names: tuple[str, ...], commands: object) -> str:
    """A hash of what a build reads from the repository: the named files' contents and the commands."""
    h = hashlib.sha256(json.dumps([commands, family.build_env]).encode())
    for name in names:
        h.update(name.encode() + b"\0")
        try:
            h.update((family.path / name).read_bytes())
        except OSError:
            h.update(b"(missing)")
    return h.hexdigest()


def build_key(family: Family) -> str:
    return _hash(family, family.install_inputs + family.inputs, [family.install, family.steps])


def install_key(family: Family) -> str:
    return _hash(family, family.install_inputs, family.install)


def _read_stamp(family: Family) -> dict[str, Any]:
    try:
        return json.loads((family.build_dir / STAMP).read_text())
    except (OSError, ValueError):
        return {}


@contextmanager
def _locked(family: Family) -> Iterator[None]:
    """One build of a family at a time across processes (tests, runs and `connbench build` may overlap)."""
    family.build_dir.mkdir(parents=True, exist_ok=True)
    with open(family.build_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def missing_tool(family: Family) -> str | None:
    """Why a program in `requires` ("npm", or "node>=20": a major version at least) is missing, or None."""
    needs = ", ".join(family.requires)
    for requirement in family.requires:
        tool, _, least = requirement.partition(">=")
        if shutil.which(tool) is None:
            return f"{tool} is not installed (the {family.name} family needs {needs})"
        if least:
            out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
            major = re.match(r"v?(\d+)", out)
            if major is None or int(major.group(1)) < int(least):
                return f"{tool} {out or '(unknown version)'} is too old (the {family.name} family needs {needs})"
    return None


def build(family: Family, force: bool = False) -> str | None:
    """Build `family` unless its cached build matches the inputs; returns why it cannot run, or None."""
    missing = missing_tool(family)
    if missing or not (family.install or family.steps):
        return missing
    key = build_key(family)
    stamp = _read_stamp(family)
    if stamp.get("key") == key and not force:
        return stamp.get("error")
    with _locked(family):
        stamp = _read_stamp(family)  # another process may have built it while we waited
        if stamp.get("key") == key and not force:
            return stamp.get("error")
        installed = install_key(family)
        install = family.install and (force or stamp.get("installed") != installed)
        error, failed = _run_steps(family, [family.install, *family.steps] if install else list(family.steps))
        if install and failed == 0:
            installed = ""  # the install failed: run it again next time
        stamp = {"key": key, "installed": installed, "error": error, "built_at": time.time()}
        (family.build_dir / STAMP).write_text(json.dumps(stamp))
    return error


def build_all(names: list[str], force: bool = False) -> int:
    """Build the families named (all when none), a line each ("node: ready" or why not); 1 if any failed."""
    failed = 0
    for family in FAMILIES.values():
        if names and family.name not in names:
            continue
        reason = build(family, force=force)
        print(f"{family.name}: {reason or 'ready'}", flush=True)
        failed += bool(reason)
    return 1 if failed else 0


def _run_steps(family: Family, steps: list[tuple[str, ...]]) -> tuple[str | None, int | None]:
    """Run `steps` in the family's folder into build/build.log: (why it failed, which step) or (None, None)."""
    log = family.build_dir / "build.log"
    names = ", ".join(" ".join([Path(step[0]).name, *step[1:2]]) for step in steps)
    print(f"connbench: building the {family.name} family ({names}) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    env = {**os.environ, **family.build_env}
    with open(log, "w") as fh:
        for i, step in enumerate(steps):
            fh.write(f"$ {' '.join(step)}\n")
            fh.flush()
            status: int | str
            try:
                status = subprocess.run(step, cwd=family.path, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
            except OSError as exc:
                fh.write(f"{exc}\n")
                status = exc.strerror or "not run"
            if status != 0:
                rel = log.relative_to(ROOT.parent) if log.is_relative_to(ROOT.parent) else log
                print(f"connbench: building the {family.name} family failed; see {rel}", file=sys.stderr, flush=True)
                return f"build failed at `{' '.join(step[:2])}` (exit {status}; log: {rel})", i
    print(f"connbench: built the {family.name} family in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return None, None


def missing_reason(family_name: str) -> str | None:
    """Why the targets of a family cannot run here (building it first if needed), or None when they can.

    The user's own services (targets/yours.py) belong to no family here: nothing to build."""
    family = FAMILIES.get(family_name)
    return build(family) if family is not None else None


# -- serving -------------------------------------------------------------------------------------------
def serve(target: Target, dsn: str, host: str, port: int, workers: int, log_level: str = "warning") -> NoReturn:
    """Serve one target in this process: exec the family's serve command (so its pid and signals are the
    target's own), or run its ASGI app with uvicorn (`log_level`: uvicorn's) and exit when it stops.

    Raises ValueError (the reason, one line) when the family cannot run here.
    """
    family = FAMILIES[target.family]
    if workers > 1 and not family.workers:
        raise ValueError(f"the {family.name} family serves one process per target (--workers {workers})")
    reason = build(family)
    if reason:
        raise ValueError(f"{target.id} cannot run here: {reason}")
    if family.app:
        _serve_app(family, target, dsn, host, port, workers, log_level)
        raise SystemExit(0)
    env = {
        **os.environ,
        "CONNBENCH_TARGET": target.id,
        "CONNBENCH_DSN": dsn,
        "CONNBENCH_HOST": host,
        "CONNBENCH_PORT": str(port),
        "CONNBENCH_WORKERS": str(workers),
        "CONNBENCH_PID": str(os.getpid()),  # the exec'd process keeps it
        "CONNBENCH_STARTED_AT": repr(time.time()),
    }
    ca = os.environ.get(DB_CA_ENV, "")
    command = family.ca_command if ca and family.ca_command else family.command
    # {python}: the interpreter running connbench (the venv's), whether or not its bin/ is on PATH.
    fill = {"host": host, "port": port, "ca_dir": os.path.dirname(ca), "python": sys.executable}
    argv = [part.format(**fill) for part in command]
    os.chdir(family.path)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)


def _serve_app(family: Family, target: Target, dsn: str, host: str, port: int, workers: int, level: str) -> None:
    """uvicorn over the family's app factory; the target and DSN reach every worker through this process's
    environment (it is the target's own process)."""
    import uvicorn

    os.environ["CONNBENCH_TARGET"] = target.id
    os.environ["CONNBENCH_DSN"] = dsn
    # uvicorn re-raises the SIGTERM it handled once it has shut down; a no-op handler makes that exit 0.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    uvicorn.run(
        family.app,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
