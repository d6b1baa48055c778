"""docker-compose.yml and .env.example, generated from the registry so they cannot drift from it.

    python -m benchmarks.compose > docker-compose.yml
    python -m benchmarks.compose --env-example > .env.example

Services: `postgres` (official image, World table seeded from benchmarks/sql/init.sql), `pgbouncer` (Debian's
package, transaction mode), one service per target id (the service name is the target id) on its own
loopback host port, `locust` (master with the web UI and the connection panel) and `worker`
(`--scale worker=N`), and `bench` (profile `bench`: the headless matrix into ./results).
Every target service gets only the variables a target reads: CONNBENCH_TARGET, CONNBENCH_DSN,
CONNBENCH_HOST, CONNBENCH_PORT, CONNBENCH_WORKERS and the settings of targets.strategies.SETTINGS.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks.pgbouncer import DEFAULT_POOL_SIZE
from benchmarks.postgres import BASE_SETTINGS, DB_NAME, DB_USER
from targets.strategies import SETTINGS, TARGETS

IMAGE = "connbench:latest"
BUILD = {"context": ".", "dockerfile": "targets/Dockerfile"}
PGBOUNCER_BUILD = "benchmarks/docker/pgbouncer"
POSTGRES_IMAGE = "postgres:16-bookworm"
TARGET_PORT = 8000  # inside each target container
TARGET_HOST_PORT_BASE = 8101  # the first target's port on the host; the others follow in registry order
PG_PORT = 5432
PGBOUNCER_PORT = 6432
LOCUSTFILE = "benchmarks/locustfile.py"  # relative to the image's working directory, /app
# Environment variables a target process reads (targets/app.py, `connbench serve`).
TARGET_ENV = ("CONNBENCH_TARGET", "CONNBENCH_DSN", "CONNBENCH_HOST", "CONNBENCH_PORT", "CONNBENCH_WORKERS")

HEADER = """\
# Generated from the target registry by `python -m benchmarks.compose > docker-compose.yml`; edit
# benchmarks/compose.py instead (tests/test_compose.py fails when the two differ).
# Copy .env.example to .env first (it documents every variable used here).
"""

# name -> (default or None when required, what it is); the order is the order of .env.example.
VARIABLES: dict[str, tuple[str | None, str]] = {
    "POSTGRES_USER": (
        DB_USER,
        "PostgreSQL role the official image creates (a superuser) and the targets connect as",
    ),
    "POSTGRES_PASSWORD": (
        None,
        "its password (required; URL-safe characters only, it is part of the targets' DSN)",
    ),
    "POSTGRES_DB": (DB_NAME, "database the official image creates; init.sql seeds its World table"),
    "PG_MAX_CONNECTIONS": ("100", "PostgreSQL max_connections (the connection cap the leaky targets hit)"),
    "PG_HOST_PORT": ("55432", "PostgreSQL's port on the host (published on 127.0.0.1 only)"),
    "PGBOUNCER_POOL_SIZE": (str(DEFAULT_POOL_SIZE), "PgBouncer server connections per user/database"),
    "CONNBENCH_WORKERS": ("1", "uvicorn worker processes per target"),
    **{s.env: (str(s.default), s.doc) for s in SETTINGS.values()},
    "LOCUST_WEB_PORT": ("8089", "the Locust web UI's port on the host (published on 127.0.0.1 only)"),
    "BENCH_PROFILE": ("quick", "profile the `bench` service runs: smoke, quick or full"),
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
        "image": IMAGE,
        "build": dict(BUILD),
        "command": ["connbench", "serve", target_id],
        "environment": environment,
        "ports": [f"127.0.0.1:{host_port(target_id)}:{TARGET_PORT}"],
        "depends_on": healthy("pgbouncer" if target.via_pgbouncer else "postgres"),
        # SIGTERM: drain, run the exit hook (up to CONNBENCH_SHUTDOWN_TIMEOUT), close connections.
        "stop_grace_period": "40s",
    }


def postgres_service() -> dict[str, Any]:
    settings = {k: v for k, v in BASE_SETTINGS.items() if k != "listen_addresses"}
    command = f"postgres -c max_connections={var('PG_MAX_CONNECTIONS')}" + "".join(
        f" -c {k}={v}" for k, v in settings.items()
    )
    return {
        "image": POSTGRES_IMAGE,
        "command": command,
        "environment": {n: var(n) for n in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")},
        # The one SQL file the embedded stack seeds from too; the image runs it once, on an empty volume.
        "volumes": ["./benchmarks/sql/init.sql:/docker-entrypoint-initdb.d/init.sql:ro"],
        "ports": [f"127.0.0.1:{var('PG_HOST_PORT')}:{PG_PORT}"],
        "shm_size": "256m",
        # Over TCP: during initialisation the image's temporary server listens on its socket only, so a
        # TCP answer means init.sql has run.
        "healthcheck": {
            "test": ["CMD-SHELL", 'pg_isready -h 127.0.0.1 -U "$${POSTGRES_USER}" -d "$${POSTGRES_DB}"'],
            "interval": "2s",
            "timeout": "5s",
            "retries": 60,
        },
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


def locust_command(*args: str) -> list[str]:
    return ["locust", "-f", LOCUSTFILE, *args]


def build_compose() -> dict[str, Any]:
    """The whole docker-compose.yml as a dict."""
    load_env = {"CONNBENCH_TARGET_URLS": target_urls()}
    services: dict[str, Any] = {"postgres": postgres_service(), "pgbouncer": pgbouncer_service()}
    services.update({t: target_service(t) for t in TARGETS})
    services["locust"] = {
        "image": IMAGE,
        "build": dict(BUILD),
        "command": locust_command("--master", "--web-host", "0.0.0.0", "--web-port", "8089", "--class-picker"),
        "environment": {**load_env, "CONNBENCH_ADMIN_DSN": dsn("postgres", PG_PORT, "postgres")},
        "ports": [f"127.0.0.1:{var('LOCUST_WEB_PORT')}:8089"],
        "depends_on": healthy(*TARGETS),
        "healthcheck": {
            "test": [
                "CMD",
                "python",
                "-c",
                "import urllib.request as u; u.urlopen('http://127.0.0.1:8089/')",
            ],
            "interval": "5s",
            "timeout": "3s",
            "retries": 10,
        },
    }
    services["worker"] = {
        "image": IMAGE,
        "build": dict(BUILD),
        "command": locust_command("--worker", "--master-host", "locust"),
        "environment": dict(load_env),
        "depends_on": {"locust": {"condition": "service_started"}},
        "healthcheck": {"disable": True},
    }
    profile = var("BENCH_PROFILE")
    services["bench"] = {
        "image": IMAGE,
        "build": dict(BUILD),
        "profiles": ["bench"],
        # `connbench run` starts its own embedded stack inside the container, so it needs no other service.
        "command": [
            "sh",
            "-c",
            f"exec connbench run --profile {profile} --out /results/$$(date -u +%Y%m%dT%H%M%SZ)-{profile}",
        ],
        "volumes": ["./results:/results"],
        "shm_size": "512m",
        "healthcheck": {"disable": True},
    }
    return {"services": services}


def render_compose() -> str:
    import yaml

    body = yaml.safe_dump(build_compose(), sort_keys=False, default_flow_style=False, width=1000)
    return HEADER + body


def render_env_example() -> str:
    lines = [
        "# Copy to .env for `docker compose` (generated by `python -m benchmarks.compose --env-example`).",
        "# Every variable docker-compose.yml uses; the values shown are the defaults, except the password.",
        "",
    ]
    for name, (default, doc) in VARIABLES.items():
        lines.append(f"# {doc}")
        lines.append(f"{name}={'change-me' if default is None else default}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compose", description=__doc__.split("\n\n")[0])
    p.add_argument("--env-example", action="store_true", help="print .env.example instead")
    args = p.parse_args(argv)
    sys.stdout.write(render_env_example() if args.env_example else render_compose())
    return 0


if __name__ == "__main__":
    sys.exit(main())
