"""docker-compose.yml and .env.example, generated from the registry so they cannot drift from it.

    python -m benchmarks.stack.compose > docker-compose.yml
    python -m benchmarks.stack.compose --env-example > .env.example

Services: `postgres` (Debian's PostgreSQL 15, World table seeded from benchmarks/sql/init.sql), `pgbouncer`
(Debian's package, transaction mode), one service per target id (the service name is the target id) on its
own loopback host port, `locust` (master with the web UI and the connection panel) and `worker`
(`--scale worker=N`), and `bench` (profile `bench`: the headless matrix into ./results). Every image builds
FROM debian:bookworm-slim (benchmarks/docker/debian-base.sh makes it where no registry is reachable).
Every target service gets only the variables a target reads: CONNBENCH_TARGET, CONNBENCH_DSN,
CONNBENCH_HOST, CONNBENCH_PORT, CONNBENCH_WORKERS and the settings of targets.contract.SETTINGS. A target's
image is the stage of targets/Dockerfile its family.toml names (`[docker] stage`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks.stack.pgbouncer import DEFAULT_POOL_SIZE
from benchmarks.stack.postgres import BASE_SETTINGS, DB_NAME, DB_USER
from targets.contract import SETTINGS
from targets.families import FAMILIES
from targets.registry import BUILT_IN as TARGETS

IMAGE = "connbench:latest"  # the python stage: the python targets, Locust and `bench`
DOCKERFILE = "targets/Dockerfile"
PGBOUNCER_BUILD = "benchmarks/docker/pgbouncer"
POSTGRES_BUILD = "benchmarks/docker/postgres"
POSTGRES_DATA = "/var/lib/postgresql/data"  # the PGDATA of the postgres image
TARGET_PORT = 8000  # inside each target container
TARGET_HOST_PORT_BASE = 8101  # the first target's port on the host; the others follow in registry order
PG_PORT = 5432
PGBOUNCER_PORT = 6432
LOCUSTFILE = "benchmarks/load/locustfile.py"  # relative to the image's working directory, /app
BENCH_SCRIPT = "/app/benchmarks/docker/bench"
# Environment variables a target process reads (targets/families.py serve, targets/python/app.py).
TARGET_ENV = ("CONNBENCH_TARGET", "CONNBENCH_DSN", "CONNBENCH_HOST", "CONNBENCH_PORT", "CONNBENCH_WORKERS")

HEADER = """\
# Generated from the target registry by `python -m benchmarks.stack.compose > docker-compose.yml`; edit
# benchmarks/stack/compose.py instead (tests/test_compose.py fails when the two differ).
# Runs as it is (no .env needed: every port is published on 127.0.0.1 only); .env overrides the defaults,
# and .env.example documents every variable used here.
"""

# name -> (default or None when required, what it is); the order is the order of .env.example.
VARIABLES: dict[str, tuple[str | None, str]] = {
    "POSTGRES_USER": (DB_USER, "PostgreSQL role the targets connect as (it owns POSTGRES_DB)"),
    "POSTGRES_PASSWORD": (
        "connbench",  # safe as a default only because every port is published on 127.0.0.1
        "password of that role and of the superuser `postgres` (URL-safe characters: it goes into DSNs; "
        "read when the database volume is created, `docker compose down -v` to change it)",
    ),
    "POSTGRES_DB": (DB_NAME, "database created on an empty volume; init.sql seeds its World table"),
    "PG_MAX_CONNECTIONS": ("100", "PostgreSQL max_connections (the connection cap the leaky targets hit)"),
    "PG_HOST_PORT": ("55432", "PostgreSQL's port on the host (published on 127.0.0.1 only)"),
    "PGBOUNCER_POOL_SIZE": (str(DEFAULT_POOL_SIZE), "PgBouncer server connections per user/database"),
    "CONNBENCH_WORKERS": ("1", "uvicorn worker processes per target"),
    **{s.env: (str(s.default), s.doc) for s in SETTINGS.values()},
    "LOCUST_WEB_PORT": ("8089", "the Locust web UI's port on the host (published on 127.0.0.1 only)"),
    "BENCH_PROFILE": ("quick", "profile the `bench` service runs: smoke, quick or full"),
    "BENCH_ARGS": ("", "more `connbench run` options for `bench`, e.g. --targets global-asyncpg --scenarios steady"),
    "BENCH_RESULTS": ("./results", "host folder `bench` writes its run folders into (as the folder's owner)"),
    "CONNBENCH_EXTRA_CA": (
        "",
        "PEM text of extra CA certificates builds trust for HTTPS (an intercepting proxy); set it in the "
        'shell, not here: CONNBENCH_EXTRA_CA="$(cat ca.pem)" docker compose build',
    ),
}


def var(name: str) -> str:
    """`${NAME:-default}`, or `${NAME:?...}` for a variable without a default."""
    default, _doc = VARIABLES[name]
    if default is None:
        return f"${{{name}:?set {name} in .env (see .env.example)}}"
    return f"${{{name}:-{default}}}"


def host_port(target_id: str) -> int:
    """The host port a target service is published on (127.0.0.1 only)."""
    return TARGET_HOST_PORT_BASE + list(TARGETS).index(target_id)


def dsn(host: str, port: int, dbname: str = "POSTGRES_DB") -> str:
    db = var(dbname) if dbname in VARIABLES else dbname
    return f"postgresql://{var('POSTGRES_USER')}:{var('POSTGRES_PASSWORD')}@{host}:{port}/{db}"


def target_urls() -> str:
    """CONNBENCH_TARGET_URLS for the load side: every target by its service name."""
    return ",".join(f"{t}=http://{t}:{TARGET_PORT}" for t in TARGETS)


def healthy(*services: str) -> dict[str, dict[str, str]]:
    return {s: {"condition": "service_healthy"} for s in services}


def http_check(port: int, path: str, interval: str = "2s", retries: int = 60) -> dict[str, Any]:
    """A health check that GETs `path` and wants a 200, with bash alone (every image has it, not every
    image has an HTTP client; a bash is far lighter than a Python started every few seconds). HTTP/1.1
    with a Host: workerd refuses HTTP/1.0 without one."""
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.1\\r\\nHost: localhost\\r\\n"
        "Connection: close\\r\\n\\r\\n' >&3 "
        "&& head -n1 <&3 | grep -q ' 200 '"
    )
    return {"test": ["CMD", "bash", "-c", script], "interval": interval, "timeout": "3s", "retries": retries}


def image(stage: str = "python") -> dict[str, Any]:
    """`image` and `build` of a service run from a stage of targets/Dockerfile (the extra CA goes in, for
    pip and npm over HTTPS)."""
    name = IMAGE if stage == "python" else f"connbench-{stage}:latest"
    args = {"CONNBENCH_EXTRA_CA": var("CONNBENCH_EXTRA_CA")}
    return {"image": name, "build": {"context": ".", "dockerfile": DOCKERFILE, "target": stage, "args": args}}


def dockerfile_stages(path: Path = Path(__file__).parents[2] / DOCKERFILE) -> set[str]:
    """The stages of targets/Dockerfile (`FROM ... AS <stage>`)."""
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", path.read_text(), flags=re.MULTILINE | re.IGNORECASE))


def target_stage(target_id: str) -> str:
    """The stage whose image runs the target: its family.toml's `[docker] stage`, which the Dockerfile has."""
    family = FAMILIES[TARGETS[target_id].family]
    if family.docker_stage not in dockerfile_stages():
        raise SystemExit(
            f"{family.path.name}/family.toml: [docker] stage {family.docker_stage!r} is not a stage of {DOCKERFILE} "
            "(give one of its stages, or add the stage there)"
        )
    return family.docker_stage


def target_service(target_id: str) -> dict[str, Any]:
    target = TARGETS[target_id]
    upstream = ("pgbouncer", PGBOUNCER_PORT) if target.via_pgbouncer else ("postgres", PG_PORT)
    environment = {
        "CONNBENCH_TARGET": target_id,
        "CONNBENCH_DSN": dsn(*upstream),
        "CONNBENCH_HOST": "0.0.0.0",
        "CONNBENCH_PORT": str(TARGET_PORT),
        "CONNBENCH_WORKERS": var("CONNBENCH_WORKERS"),
        **{s.env: var(s.env) for s in SETTINGS.values()},
    }
    return {
        **image(target_stage(target_id)),
        "command": ["connbench", "serve", target_id],
        "environment": environment,
        "ports": [f"127.0.0.1:{host_port(target_id)}:{TARGET_PORT}"],
        "depends_on": healthy("pgbouncer" if target.via_pgbouncer else "postgres"),
        # Ready, not only alive: the load side starts once every pool that fills eagerly is full.
        "healthcheck": http_check(TARGET_PORT, "/ready"),
        # SIGTERM: drain, run the exit hook (up to CONNBENCH_SHUTDOWN_TIMEOUT), close connections.
        "stop_grace_period": "40s",
    }


def postgres_service() -> dict[str, Any]:
    settings = {k: v for k, v in BASE_SETTINGS.items() if k != "listen_addresses"}
    command = f"postgres -c max_connections={var('PG_MAX_CONNECTIONS')}" + "".join(
        f" -c {k}={v}" for k, v in settings.items()
    )
    return {
        "image": "connbench-postgres:latest",
        "build": POSTGRES_BUILD,
        "command": command,
        "environment": {n: var(n) for n in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")},
        # The one SQL file the embedded stack seeds from too; the image runs it once, on an empty volume.
        # Its health check answers over TCP only once that has run.
        "volumes": [
            "./benchmarks/sql/init.sql:/docker-entrypoint-initdb.d/init.sql:ro",
            f"pgdata:{POSTGRES_DATA}",
        ],
        "ports": [f"127.0.0.1:{var('PG_HOST_PORT')}:{PG_PORT}"],
        "shm_size": "256m",
    }


def pgbouncer_service() -> dict[str, Any]:
    return {
        "image": "connbench-pgbouncer:latest",
        "build": PGBOUNCER_BUILD,
        "environment": {
            "POSTGRES_HOST": "postgres",
            "POSTGRES_PORT": str(PG_PORT),
            **{n: var(n) for n in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")},
            "PGBOUNCER_PORT": str(PGBOUNCER_PORT),
            "PGBOUNCER_POOL_SIZE": var("PGBOUNCER_POOL_SIZE"),
        },
        "depends_on": healthy("postgres"),
    }


ADMIN_DSN = f"postgresql://postgres:{var('POSTGRES_PASSWORD')}@postgres:{PG_PORT}/postgres"


def locust_command(*args: str) -> list[str]:
    return ["locust", "-f", LOCUSTFILE, *args]


def build_compose() -> dict[str, Any]:
    """The whole docker-compose.yml as a dict."""
    load_env = {"CONNBENCH_TARGET_URLS": target_urls()}
    services: dict[str, Any] = {"postgres": postgres_service(), "pgbouncer": pgbouncer_service()}
    services.update({t: target_service(t) for t in TARGETS})
    services["locust"] = {
        **image(),
        "command": locust_command("--master", "--web-host", "0.0.0.0", "--web-port", "8089", "--class-picker"),
        # The panel counts connections as the superuser, which keeps its reserved slots when targets hit the cap.
        "environment": {**load_env, "CONNBENCH_ADMIN_DSN": ADMIN_DSN},
        "ports": [f"127.0.0.1:{var('LOCUST_WEB_PORT')}:8089"],
        "depends_on": healthy(*TARGETS),
        "healthcheck": http_check(8089, "/", interval="5s", retries=10),
    }
    services["worker"] = {
        **image(),
        "command": locust_command("--worker", "--master-host", "locust"),
        "environment": dict(load_env),
        "depends_on": {"locust": {"condition": "service_started"}},
        "healthcheck": {"disable": True},
    }
    services["bench"] = {
        **image(),
        "profiles": ["bench"],
        # `connbench run` starts its own embedded stack inside the container (it restarts and reconfigures
        # PostgreSQL and stops targets, which the services above are not for), so it needs no other service.
        # Root only to hand the run folder to the owner of BENCH_RESULTS (see the script).
        "user": "root",
        "entrypoint": [BENCH_SCRIPT],
        "environment": {"BENCH_PROFILE": var("BENCH_PROFILE"), "BENCH_ARGS": var("BENCH_ARGS")},
        "volumes": [f"{var('BENCH_RESULTS')}:/results"],
        "shm_size": "512m",
        "healthcheck": {"disable": True},
    }
    return {"services": services, "volumes": {"pgdata": {}}}


def render_compose() -> str:
    import yaml

    body = yaml.safe_dump(build_compose(), sort_keys=False, default_flow_style=False, width=1000)
    return HEADER + body


def render_env_example() -> str:
    lines = [
        "# Copy to .env for `docker compose` (generated by `python -m benchmarks.stack.compose --env-example`).",
        "# Every variable docker-compose.yml uses; the values shown are the defaults, except the password.",
        "",
    ]
    for name, (default, doc) in VARIABLES.items():
        lines.append(f"# {doc}")
        lines.append(f"{name}={'change-me' if default is None else default}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stack.compose", description=__doc__.split("\n\n")[0])
    p.add_argument("--env-example", action="store_true", help="print .env.example instead")
    args = p.parse_args(argv)
    sys.stdout.write(render_env_example() if args.env_example else render_compose())
    return 0


if __name__ == "__main__":
    sys.exit(main())
