"""The container path for real: `docker compose up` on a Docker engine, as a user runs it from a fresh clone.

Builds the debian:bookworm-slim base offline when it is missing (benchmarks/docker/debian-base.sh), then
builds and starts the stack with no .env (an empty --env-file) under its own project name and ports, checks
PostgreSQL, the extra CA in the images, the Locust UI and its connection panel while a test started through
the UI runs, asks every target for /db through its published port, runs a short headless matrix through the
`bench` profile, and finally `down -v`, after which no container, network or volume of the project is left.
Skipped, with the reason, where no Docker engine answers (.ci/run starts one).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from browser import Chromium, find_chromium
from helpers import wait_until

from benchmarks.stack import compose
from benchmarks.stack.procs import free_port
from targets.registry import TARGETS

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "debian:bookworm-slim"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")  # where Debian keeps a machine's own CAs


def engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client (apt-get install docker.io)"
    out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return f"no Docker engine answers ({(out.stderr.strip().splitlines() or ['?'])[-1]}); start dockerd"
    return None


def compose_command() -> list[str] | None:
    """Compose v2 (`docker compose`) where the client has it, else Debian's docker-compose (v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


PROBLEM = engine_problem() or (None if compose_command() else "neither `docker compose` nor docker-compose")
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"docker: {PROBLEM}")


def extra_ca() -> str:
    """This machine's own CAs (an intercepting proxy's among them), for pip and npm inside the builds."""
    return "".join(p.read_text() for p in sorted(LOCAL_CAS.glob("*.crt"))) if LOCAL_CAS.is_dir() else ""


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    env_file: Path
    results: Path

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        nice = ["nice", "-n", "10"] if args[0] == "build" else []  # builds take the CPU others need
        cmd = [*nice, *compose_command(), "-p", self.project, "--env-file", str(self.env_file), *args]
        out = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert out.returncode == 0, (
                f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
            )
        return out

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.env['LOCUST_WEB_PORT']}"

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, cmd in {
            "containers": ["docker", "ps", "-a", "-q", "--filter", label],
            "networks": ["docker", "network", "ls", "-q", "--filter", label],
            "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
        }.items():
            found[kind] = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        return found


@pytest.fixture(scope="module")
def base_image() -> None:
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip(f"{BASE_IMAGE} is missing and building it needs root and debootstrap")
    script = REPO / "benchmarks" / "docker" / "debian-base.sh"
    out = subprocess.run(["nice", "-n", "10", str(script)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def stack(base_image, tmp_path_factory) -> Iterator[Stack]:
    """`up -d --build` as from a fresh clone: no .env, nothing of ours in the environment."""
    tmp = tmp_path_factory.mktemp("docker")
    env_file = tmp / "empty.env"
    env_file.write_text("")
    results = tmp / "results"
    results.mkdir()
    if os.geteuid() == 0:
        os.chown(results, 1000, 1000)  # a user's folder, as on a desktop: `bench` writes as its owner
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONNBENCH_", "POSTGRES_", "PG", "BENCH_"))}
    # Only what a parallel session on this machine could collide with: the loopback ports from .env.
    env.update(PG_HOST_PORT=str(free_port()), LOCUST_WEB_PORT=str(free_port()), BENCH_RESULTS=str(results))
    if extra_ca():
        env["CONNBENCH_EXTRA_CA"] = extra_ca()
    st = Stack(f"connbench-test-{uuid.uuid4().hex[:8]}", env, env_file, results)
    try:
        # The base image and the layers stay cached between runs; v1's classic builder would keep the
        # container of a failed step without --force-rm.
        st.compose("build", *(["--force-rm"] if compose_command() == ["docker-compose"] else []), timeout=1800)
        st.compose("up", "-d", timeout=900)
        yield st
    finally:
        st.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False)


def test_postgres_is_debians_15_seeded_and_wants_the_password(stack):
    port = stack.env["PG_HOST_PORT"]
    dsn = f"postgresql://connbench:connbench@127.0.0.1:{port}/connbench"
    with psycopg.connect(dsn, application_name="connbench:tests") as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        assert "PostgreSQL 15." in version and "Debian" in version, version
        assert conn.execute("SELECT count(*) FROM world").fetchone()[0] == 10_000
        assert conn.execute("SHOW password_encryption").fetchone()[0] == "scram-sha-256"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn.replace("connbench:connbench@", "connbench:wrong@"), connect_timeout=10).close()


def test_images_trust_the_extra_ca_and_refuse_a_file_name(stack):
    pem = stack.env.get("CONNBENCH_EXTRA_CA")
    if pem:
        bundle = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "cat", compose.IMAGE, "/etc/ssl/certs/ca-certificates.crt"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        first = pem.split("-----END CERTIFICATE-----")[0].strip().splitlines()[1:]
        assert "\n".join(first) in bundle
    out = subprocess.run(
        ["docker", "run", "--rm", "-e", "CONNBENCH_EXTRA_CA=/tmp/ca.pem", compose.IMAGE, "trust-extra-ca"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "must hold PEM text" in out.stderr, out.stderr


PANEL_ROWS_JS = """
Array.from(document.querySelectorAll('tr')).map(tr =>
  Array.from(tr.querySelectorAll('td, th')).map(td => td.innerText.trim()))
"""


def test_locust_ui_and_its_panel_show_the_connections_of_a_test_started_in_the_ui(stack, tmp_path):
    page = httpx.get(stack.web_url + "/", timeout=10)
    assert page.status_code == 200 and "connbench-panel-link" in page.text
    panel = httpx.get(stack.web_url + "/connbench/connections", timeout=10).json()
    assert panel["db_up"] and [row["target"] for row in panel["targets"]] == list(TARGETS)
    rows = {row["target"]: row for row in panel["targets"]}
    assert rows["pool-eager-psycopg"]["total"] > 0  # its pool filled before the target was ready
    chosen = "pool-lazy-asyncpg"  # no connection before its first request (this test runs before the /db one)
    assert rows[chosen]["total"] == 0

    workers = httpx.get(stack.web_url + "/stats/requests", timeout=10).json().get("workers", [])
    assert len(workers) == 1, workers
    form = {"user_count": "4", "spawn_rate": "4", "user_classes": chosen, "run_time": "60s"}
    assert httpx.post(stack.web_url + "/swarm", data=form, timeout=10).json()["success"]
    try:

        def chosen_row() -> dict | None:
            data = httpx.get(stack.web_url + "/connbench/connections", timeout=10).json()
            row = next(r for r in data["targets"] if r["target"] == chosen)
            return row if row["total"] > 0 and row["users"] == 4 else None

        wait_until(chosen_row, timeout=60, interval=0.5, what=f"{chosen}'s connections in the panel")
        if find_chromium() is not None:
            with Chromium() as browser:
                browser.open(stack.web_url + "/connbench")

                def shown() -> list[str] | None:
                    row = next((r for r in browser.evaluate(PANEL_ROWS_JS) or [] if r and r[0] == chosen), None)
                    return row if row and len(row) > 2 and row[2].isdigit() and int(row[2]) > 0 else None

                row = wait_until(shown, timeout=60, interval=0.5, what="the panel page's row")
                assert row[1] == "4", row
                browser.screenshot(tmp_path / "docker-panel.png")
    finally:
        httpx.get(stack.web_url + "/stop", timeout=10)


def test_every_target_answers_db_through_its_published_port(stack):
    for tid in TARGETS:
        r = httpx.get(f"http://127.0.0.1:{compose.host_port(tid)}/db", timeout=30)
        assert r.status_code == 200, f"{tid}: {r.status_code} {r.text}"
        row = r.json()
        assert set(row) == {"id", "randomNumber"} and 1 <= row["id"] <= 10_000, (tid, row)
        assert httpx.get(f"http://127.0.0.1:{compose.host_port(tid)}/stats", timeout=10).json()["target"] == tid


def test_bench_profile_writes_a_run_folder_into_the_hosts_results(stack):
    env_before = dict(stack.env)
    stack.env["BENCH_PROFILE"] = "smoke"
    try:
        stack.compose(
            "--profile",
            "bench",
            "run",
            "--rm",
            "bench",
            "--targets",
            "pool-eager-psycopg",
            "--scenarios",
            "steady",
            timeout=900,
        )
    finally:
        stack.env = env_before
    (run,) = list(stack.results.iterdir())
    assert run.name.endswith("-smoke")
    for name in ("manifest.json", "summary.csv", "timeseries.csv", "baseline.csv", "report.html"):
        assert (run / name).is_file(), f"{name} missing: {sorted(p.name for p in run.iterdir())}"
    with open(run / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["target"] for r in rows} == {"pool-eager-psycopg"}
    owner = stack.results.stat().st_uid
    assert all(p.stat().st_uid == owner for p in run.rglob("*")), "files not owned by the results folder's owner"


def test_down_leaves_no_container_network_or_volume(stack):
    assert any(stack.leftovers().values())
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300)
    deadline = time.monotonic() + 30
    while any((left := stack.leftovers()).values()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not any(left.values()), left
