"""docker-compose.yml against the registry, and every target service's command run natively.

Without a Docker engine (tests/test_docker.py runs the containers where one can start): `docker-compose
config` validates the file, and each target service's own `command` and `environment` run as local
processes against the embedded PostgreSQL / PgBouncer (the service names `postgres` and `pgbouncer` mapped
to 127.0.0.1 and their ports); the images' entrypoints and health checks run natively too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from benchmarks.stack import compose
from benchmarks.stack.pgbouncer import find_pgbouncer
from benchmarks.stack.procs import free_port, make_service_dir, service_user, wait_port
from targets.contract import SETTINGS
from targets.families import FAMILIES
from targets.registry import TARGETS

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
INFRA = {"postgres", "pgbouncer", "locust", "worker", "bench"}
TARGET_READS = {*compose.TARGET_ENV, *(s.env for s in SETTINGS.values())}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (enough for this file)."""

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return VAR.sub(sub, value).replace("$$", "$")


# -- the file and the registry -------------------------------------------------------------------------
def test_committed_files_are_the_generated_ones():
    assert COMPOSE_FILE.read_text() == compose.render_compose(), (
        "docker-compose.yml is stale: python -m benchmarks.stack.compose > docker-compose.yml"
    )
    assert ENV_EXAMPLE.read_text() == compose.render_env_example(), (
        ".env.example is stale: python -m benchmarks.stack.compose --env-example > .env.example"
    )


def test_every_target_is_a_service_and_every_target_service_a_target():
    services = load_compose()["services"]
    target_services = set(services) - INFRA
    assert target_services == set(TARGETS)
    for tid in TARGETS:
        svc = services[tid]
        assert svc["command"] == ["connbench", "serve", tid]
        assert svc["environment"]["CONNBENCH_TARGET"] == tid
        upstream = "pgbouncer" if TARGETS[tid].via_pgbouncer else "postgres"
        assert f"@{upstream}:" in svc["environment"]["CONNBENCH_DSN"]
        assert svc["depends_on"] == {upstream: {"condition": "service_healthy"}}


def test_target_environment_sets_only_what_targets_read():
    services = load_compose()["services"]
    for tid in TARGETS:
        env = services[tid]["environment"]
        assert set(env) <= TARGET_READS, f"{tid}: {set(env) - TARGET_READS} are not read by a target"
        assert {"CONNBENCH_TARGET", "CONNBENCH_DSN", "CONNBENCH_HOST", "CONNBENCH_PORT"} <= set(env)
    # ... and the targets really read each of them (so the list above cannot go stale silently).
    readers = [
        *(REPO / "targets").rglob("*.py"),
        *(REPO / "benchmarks").glob("cli*.py"),
        *(REPO / "benchmarks").glob("cli/*.py"),
    ]
    source = "".join(p.read_text() for p in readers)
    for name in compose.TARGET_ENV:
        assert name in source, f"{name} is not read by targets/ or `connbench serve`"


def test_every_target_runs_from_the_dockerfile_stage_its_family_names():
    services = load_compose()["services"]
    stages = compose.dockerfile_stages(TARGET_DOCKERFILE)
    for tid in TARGETS:
        stage = FAMILIES[TARGETS[tid].family].docker_stage
        assert stage in stages and services[tid]["build"]["target"] == stage


def test_a_family_without_a_dockerfile_stage_is_one_line(monkeypatch: pytest.MonkeyPatch):
    family = FAMILIES["prisma"]
    monkeypatch.setitem(FAMILIES, "prisma", dataclasses.replace(family, docker_stage="deno"))
    with pytest.raises(
        SystemExit, match=r"prisma/family.toml: \[docker\] stage 'deno' is not a stage of targets/Dockerfile"
    ):
        compose.target_stage("prisma-global")


def test_the_node_stage_installs_every_family_lockfile():
    """The npm layer takes every family's lockfiles by a glob, so a new Node family needs no line here."""
    text = TARGET_DOCKERFILE.read_text()
    assert "*/package-lock.json" in text
    for family in FAMILIES.values():
        assert f"targets/{family.name}/" not in text, f"the Dockerfile names the {family.name} family"


def test_published_ports_are_unique_and_loopback_only():
    services = load_compose()["services"]
    published = []
    for name, svc in services.items():
        for spec in svc.get("ports", []):
            m = re.fullmatch(r"127\.0\.0\.1:(.+):(\d+)", spec)
            assert m, f"{name} publishes {spec} beyond loopback"
            published.append(interpolate(m.group(1), {}))
    assert len(published) == len(set(published)), published
    assert all(services[t]["ports"] for t in TARGETS)


def test_load_side_knows_every_target():
    services = load_compose()["services"]
    for name in ("locust", "worker"):
        urls = services[name]["environment"]["CONNBENCH_TARGET_URLS"]
        pairs = dict(p.split("=", 1) for p in urls.split(","))
        assert pairs == {t: f"http://{t}:{compose.TARGET_PORT}" for t in TARGETS}
    assert "CONNBENCH_ADMIN_DSN" in services["locust"]["environment"]
    assert services["bench"]["profiles"] == ["bench"]
    assert services["bench"]["volumes"] == ["${BENCH_RESULTS:-./results}:/results"]


def test_env_example_documents_every_variable():
    used = {m.group(1) for m in VAR.finditer(COMPOSE_FILE.read_text())}
    documented = env_file(ENV_EXAMPLE)
    assert used <= set(documented), f"not in .env.example: {used - set(documented)}"
    text = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(text):
        if "=" in line and not line.startswith("#"):
            assert text[i - 1].startswith("# "), f"{line} has no comment"


def test_init_sql_is_mounted_into_the_postgres_image():
    pg = load_compose()["services"]["postgres"]
    assert pg["build"] == "benchmarks/docker/postgres"
    assert "./benchmarks/sql/init.sql:/docker-entrypoint-initdb.d/init.sql:ro" in pg["volumes"]
    assert "max_connections=${PG_MAX_CONNECTIONS:-100}" in pg["command"]
    assert (REPO / "benchmarks" / "sql" / "init.sql").is_file()


# -- docker-compose config -----------------------------------------------------------------------------
DOCKER_COMPOSE = shutil.which("docker-compose")
needs_docker_compose = pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose is not installed")


def docker_compose(*args: str, env_file_path: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "CONNBENCH_", "PG"))}
    return subprocess.run(
        [DOCKER_COMPOSE, "-f", str(COMPOSE_FILE), "--env-file", str(env_file_path), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean,
        timeout=120,
    )


@needs_docker_compose
def test_docker_compose_accepts_the_file():
    out = docker_compose("config", "-q", env_file_path=ENV_EXAMPLE)
    assert out.returncode == 0, out.stderr


@needs_docker_compose
def test_docker_compose_runs_without_an_env_file_and_env_overrides(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = docker_compose("config", env_file_path=empty)
    assert out.returncode == 0, out.stderr
    default = yaml.safe_load(out.stdout)["services"]
    assert default["postgres"]["environment"]["POSTGRES_PASSWORD"] == env_file(ENV_EXAMPLE)["POSTGRES_PASSWORD"]
    own = tmp_path / "own.env"
    own.write_text("POSTGRES_PASSWORD=other-pw\nLOCUST_WEB_PORT=9999\n")
    out = docker_compose("config", env_file_path=own)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)["services"]
    assert resolved["postgres"]["environment"]["POSTGRES_PASSWORD"] == "other-pw"
    assert ":other-pw@postgres:" in resolved["global-asyncpg"]["environment"]["CONNBENCH_DSN"]
    assert [str(p) for p in resolved["locust"]["ports"]] == ["127.0.0.1:9999:8089/tcp"]  # compose v1's form


@needs_docker_compose
def test_docker_compose_resolves_target_environment_as_we_do():
    out = docker_compose("config", env_file_path=ENV_EXAMPLE)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)["services"]
    values = env_file(ENV_EXAMPLE)
    for tid in TARGETS:
        ours = {k: interpolate(str(v), values) for k, v in load_compose()["services"][tid]["environment"].items()}
        assert {k: str(v) for k, v in resolved[tid]["environment"].items()} == ours


# -- each target service, run natively -----------------------------------------------------------------
def native_service(tid: str, local_dsn: str, port: int) -> tuple[list[str], dict]:
    """The service's command and environment with the .env.example values, as a local process; its DSN
    names the same database through the same service (PostgreSQL or PgBouncer), here on loopback with the
    embedded cluster's own password."""
    svc = load_compose()["services"][tid]
    values = env_file(ENV_EXAMPLE)
    env = {k: interpolate(str(v), values) for k, v in svc["environment"].items()}
    user, password, db = (values[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))
    via = TARGETS[tid].via_pgbouncer
    host, port_in = ("pgbouncer", compose.PGBOUNCER_PORT) if via else ("postgres", compose.PG_PORT)
    assert env["CONNBENCH_DSN"] == f"postgresql://{user}:{password}@{host}:{port_in}/{db}"
    env["CONNBENCH_DSN"] = local_dsn
    env["CONNBENCH_HOST"] = "127.0.0.1"  # what the container binds as 0.0.0.0 stays on loopback here
    env["CONNBENCH_PORT"] = str(port)  # its port inside the container, a free one here
    command = list(svc["command"])
    assert command[0] == "connbench"
    return [sys.executable, "-m", "benchmarks.cli", *command[1:]], env


@contextmanager
def run_native(command: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONNBENCH_")}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command,
            env={**base, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"exited with {proc.returncode}:\n{log.read().decode(errors='replace')}")
                try:
                    if httpx.get(url + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "not ready after 60 s"
                time.sleep(0.1)
            yield url
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(45)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.mark.parametrize("tid", list(TARGETS))
def test_target_service_command_serves_db(tid, pg, request):
    local_dsn = request.getfixturevalue("bouncer").dsn if TARGETS[tid].via_pgbouncer else pg.dsn
    port = free_port()
    command, env = native_service(tid, local_dsn, port)
    with run_native(command, env, port) as url:
        # One request: the first one succeeds for every strategy (edge-global-asyncpg fails the second
        # by design, which tests/ of the targets cover).
        r = httpx.get(url + "/db", timeout=30)
        assert r.status_code == 200, r.text
        row = r.json()
        assert set(row) == {"id", "randomNumber"}
        assert 1 <= row["id"] <= 10_000 and isinstance(row["randomNumber"], int)
        stats = httpx.get(url + "/stats", timeout=10).json()
        assert stats["target"] == tid
        assert stats["settings"]["pool_max"] == int(env["CONNBENCH_POOL_MAX"])


# -- the PgBouncer image's entrypoint, run natively ----------------------------------------------------
ENTRYPOINT = REPO / "benchmarks" / "docker" / "pgbouncer" / "entrypoint.sh"


def test_pgbouncer_entrypoint_pools_with_the_password(pg):
    if find_pgbouncer() is None:
        pytest.skip("PgBouncer is not installed (apt-get install pgbouncer)")
    assert load_compose()["services"]["pgbouncer"]["build"] == str(ENTRYPOINT.parent.relative_to(REPO))
    config_dir = make_service_dir("connbench-pgb-")
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_USER": "connbench",
        "POSTGRES_PASSWORD": pg.password,  # the embedded cluster's, which PgBouncer logs in with
        "POSTGRES_DB": "connbench",
        "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
        "PGBOUNCER_PORT": str(port),
        "PGBOUNCER_POOL_SIZE": "3",
        "PGBOUNCER_CONFIG_DIR": str(config_dir),
    }
    proc = subprocess.Popen(
        ["sh", str(ENTRYPOINT)],
        env=env,
        user=service_user(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert wait_port(port, 15, proc), proc.stdout.read().decode() if proc.poll() is not None else "no port"
        dsn = f"postgresql://connbench:{pg.password}@127.0.0.1:{port}/connbench"
        with psycopg.connect(dsn, application_name="connbench:tests", prepare_threshold=None) as conn:
            assert conn.execute("SELECT count(*) FROM world").fetchone()[0] == 10_000
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn.replace(pg.password, "wrong"), connect_timeout=5).close()
        ini = (config_dir / "pgbouncer.ini").read_text()
        assert "pool_mode = transaction" in ini and "default_pool_size = 3" in ini
        check = dockerfile_healthcheck(ENTRYPOINT.parent / "Dockerfile")
        assert subprocess.run(check, env={"PGBOUNCER_PORT": str(port)}, timeout=10).returncode == 0
        assert subprocess.run(check, env={"PGBOUNCER_PORT": str(free_port())}, timeout=10).returncode != 0
    finally:
        proc.terminate()
        proc.wait(15)
        proc.stdout.close()
        shutil.rmtree(config_dir, ignore_errors=True)


# -- the target image's CMD and HEALTHCHECK, run natively ----------------------------------------------
TARGET_DOCKERFILE = REPO / "targets" / "Dockerfile"


def dockerfile_instruction(path: Path, name: str) -> str:
    """The text of the last `name` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    found = [line[len(name) :].strip() for line in text.splitlines() if line.startswith(name + " ")]
    assert found, f"no {name} in {path}"
    return found[-1]


def dockerfile_healthcheck(path: Path) -> list[str]:
    """HEALTHCHECK [options] CMD ["exec", "form"] as an argument list."""
    spec = dockerfile_instruction(path, "HEALTHCHECK")
    return json.loads(spec.split(" CMD ", 1)[1])


def test_image_cmd_serves_the_target_and_healthcheck_sees_it(pg):
    cmd = dockerfile_instruction(TARGET_DOCKERFILE, "CMD")
    assert not cmd.startswith("["), "shell form expected: the target comes from $CONNBENCH_TARGET"
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "CONNBENCH_TARGET": "pool-eager-psycopg",
        "CONNBENCH_DSN": pg.dsn,
        "CONNBENCH_HOST": "127.0.0.1",
        "CONNBENCH_PORT": str(port),
    }
    check = dockerfile_healthcheck(TARGET_DOCKERFILE)
    check = [sys.executable if check[0] == "python" else check[0], *check[1:]]
    with run_native(["sh", "-c", cmd], env, port) as url:
        assert httpx.get(url + "/db", timeout=30).status_code == 200
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
    assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode != 0
