"""The container path for real: `docker compose up` on a Docker engine, as a user runs it from a fresh clone.

Builds the debian:bookworm-slim base offline when it is missing (benchmarks/docker/debian-base.sh), then
builds and starts the stack with no .env (an empty --env-file) under its own project name and ports, checks
PostgreSQL, the extra CA in the images, the Locust UI started with its form's defaults (every
target gets requests) and the panel's charts, asks every target for /db through its published port, scales
the Locust workers to three (`up --scale worker=3`) and compares one target's counts from Locust, each
worker's network, the target and PostgreSQL, runs a short headless matrix through the `bench` profile, and
finally `down -v`, after which no container, network or volume of the project is left. Skipped, with the
reason, where no Docker engine answers (.ci/run starts one).
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
from browser import Chromium, charts, find_chromium, start_with_form_defaults
from helpers import query, wait_until

from benchmarks.results.summary import counts_agree
from benchmarks.stack import compose
from benchmarks.stack.procs import free_port
from targets.registry import TARGETS

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "debian:bookworm-slim"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")  # where Debian keeps a machine's own CAs
SCALED_TARGET = "per-request-asyncpg"  # one session per request: PostgreSQL counts its requests too
DB_REQUEST = "GET /db"  # the first bytes of every /db request: what the workers' iptables rules count


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

    def state(self, service: str) -> str:
        """`ps` of the stack and the service's last log lines: what a failed request to it is read with."""
        ps = self.compose("ps", check=False).stdout
        logs = self.compose("logs", "--tail", "40", service, check=False)
        return f"{ps}\n{logs.stdout[-4000:]}{logs.stderr[-2000:]}"

    def up(self) -> None:
        """`up -d`; when it fails, the stack's `ps` and the last log lines of every container that stopped."""
        out = self.compose("up", "-d", timeout=900, check=False)
        if out.returncode == 0:
            return
        ps_exited = ["docker", "ps", "-a", "-q", "--filter", self.label, "--filter", "status=exited"]
        stopped = subprocess.run(ps_exited, capture_output=True, text=True).stdout.split()
        logs = []
        for container in stopped:
            log = subprocess.run(["docker", "logs", "--tail", "20", container], capture_output=True, text=True)
            logs.append(f"== stopped container {container}:\n{log.stdout}{log.stderr}")
        ps = self.compose("ps", check=False).stdout
        raise AssertionError(f"up -d exited {out.returncode}:\n{out.stderr[-3000:]}\n{ps}\n" + "\n".join(logs))

    def get(self, service: str, url: str, timeout: float = 30) -> httpx.Response:
        try:
            return httpx.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            raise AssertionError(f"{service}: {exc!r}\n{self.state(service)}") from exc

    @property
    def label(self) -> str:
        """The filter for this project's containers, networks and volumes."""
        return f"label=com.docker.compose.project={self.project}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.env['LOCUST_WEB_PORT']}"

    def leftovers(self) -> dict[str, list[str]]:
        found = {}
        for kind, cmd in {
            "containers": ["docker", "ps", "-a", "-q", "--filter", self.label],
            "networks": ["docker", "network", "ls", "-q", "--filter", self.label],
            "volumes": ["docker", "volume", "ls", "-q", "--filter", self.label],
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
        st.up()
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


def test_every_target_answers_db_through_its_published_port(stack):
    # Runs before the web UI's load: after it, edge-global's client belongs to an event loop that is gone,
    # worker-global fails every second request, and the leaky targets have filled the connection cap.
    for tid in TARGETS:
        r = stack.get(tid, f"http://127.0.0.1:{compose.host_port(tid)}/db")
        assert r.status_code == 200, f"{tid}: {r.status_code} {r.text}"
        row = r.json()
        assert set(row) == {"id", "randomNumber"} and 1 <= row["id"] <= 10_000, (tid, row)
        assert httpx.get(f"http://127.0.0.1:{compose.host_port(tid)}/stats", timeout=10).json()["target"] == tid


def test_the_forms_defaults_load_every_target_and_the_panel_charts_them(stack, tmp_path):
    page = stack.get("locust", stack.web_url + "/", timeout=10)
    assert page.status_code == 200 and "connbench-panel-link" in page.text
    panel = httpx.get(stack.web_url + "/connbench/connections", timeout=10).json()
    assert panel["db_up"] and [row["target"] for row in panel["targets"]] == list(TARGETS)
    rows = {row["target"]: row for row in panel["targets"]}
    assert rows["pool-eager-psycopg"]["total"] > 0  # its pool filled before the target was ready

    def one_worker() -> bool:  # the worker container connects to the master once both have started
        return len(httpx.get(stack.web_url + "/stats/requests", timeout=10).json().get("workers", [])) == 1

    wait_until(one_worker, timeout=60, interval=0.5, what="the Locust worker")

    def requests_on_every_target() -> bool:
        stats = httpx.get(stack.web_url + "/stats/requests", timeout=10).json()["stats"]
        done = {s["name"] for s in stats if s["num_requests"] > 0}
        return all(f"{t} /db" in done for t in TARGETS)

    try:
        if find_chromium() is None:  # what the form sends with its defaults: every class, its user count
            form = {"user_count": 2 * len(TARGETS), "spawn_rate": 2 * len(TARGETS), "user_classes": sorted(TARGETS)}
            assert httpx.post(stack.web_url + "/swarm", data=form, timeout=30).json()["success"]
            wait_until(requests_on_every_target, timeout=90, interval=1, what="requests on every target")
            return
        with Chromium() as browser:
            browser.open(stack.web_url + "/")
            assert browser.evaluate("window.templateArgs.available_user_classes") == sorted(TARGETS)
            start_with_form_defaults(browser)
            wait_until(requests_on_every_target, timeout=90, interval=1, what="requests on every target")
            browser.open(stack.web_url + "/?tab=connbench")
            drawn = wait_until(lambda: len(charts(browser)) == len(TARGETS) and charts(browser), timeout=60,
                               interval=0.5, what="a chart per target")  # fmt: skip
            assert any(max(ys["total"], default=0) > 0 for c in drawn.values() for ys in [c["connections"]])
            browser.screenshot(tmp_path / "docker-panel.png")
    finally:
        httpx.post(stack.web_url + "/stop", timeout=10)
        # The leaky targets never close what they opened: end those sessions, so the cap is free again.
        dsn = f"postgresql://postgres:connbench@127.0.0.1:{stack.env['PG_HOST_PORT']}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
                         ("connbench:%leaky%",))  # fmt: skip


def locust_report(stack: Stack) -> dict:
    return httpx.get(stack.web_url + "/stats/requests", timeout=10).json()


def worker_containers(stack: Stack) -> dict[str, int]:
    """The worker containers' host names (Locust's worker ids start with them) and their processes' pids."""
    ids = stack.compose("ps", "-q", "worker").stdout.split()
    fmt = "{{.Config.Hostname}} {{.State.Pid}}"
    out = subprocess.run(["docker", "inspect", "-f", fmt, *ids], capture_output=True, text=True, check=True).stdout
    return {host: int(pid) for host, pid in (line.split() for line in out.splitlines())}


def db_request_rule(pid: int, action: str) -> subprocess.CompletedProcess:
    """Add (-A) or delete (-D) the rule counting the /db requests sent from the network namespace of `pid`.

    Locust reports no request counts per worker; the worker's own network does (as in test_load_hosts.py).
    """
    rule = ["OUTPUT", "-p", "tcp", "--dport", "8000", "-m", "string", "--string", DB_REQUEST, "--algo", "bm",
            "-j", "ACCEPT"]  # fmt: skip
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", action, *rule], capture_output=True, text=True)


def db_requests_sent(pid: int) -> int:
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-L", "OUTPUT", "-v", "-x", "-n"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    (line,) = [line for line in out.splitlines() if f'"{DB_REQUEST}"' in line]
    return int(line.split()[0])


def test_three_workers_share_a_swarm_and_the_counts_agree(stack):
    """`up --scale worker=3` on the running stack: the master hands each worker its share of one target's
    users, and Locust, the workers' network, the target's /stats and PostgreSQL count the same requests."""
    users = 6  # two per worker
    stats_url = f"http://127.0.0.1:{compose.host_port(SCALED_TARGET)}/stats"
    admin = f"postgresql://postgres:connbench@127.0.0.1:{stack.env['PG_HOST_PORT']}/postgres"
    sessions_sql = "SELECT sessions FROM pg_stat_database WHERE datname = 'connbench'"
    scale = ("up", "-d", "--no-deps", "--no-recreate", "--scale")
    containers: dict[str, int] = {}
    try:
        stack.compose(*scale, "worker=3", "worker", timeout=300)
        wait_until(lambda: len(locust_report(stack)["workers"]) == 3, timeout=60, interval=0.5, what="3 workers")
        containers = worker_containers(stack)
        assert len(containers) == 3, containers
        for pid in containers.values():
            added = db_request_rule(pid, "-A")
            assert added.returncode == 0, f"iptables in a worker's namespace: {added.stderr.strip()}"
        served_before = httpx.get(stats_url, timeout=10).json()["requests"]
        (sessions_before,) = query(admin, sessions_sql)[0]

        form = {"user_count": users, "spawn_rate": users, "user_classes": [SCALED_TARGET]}
        assert httpx.post(stack.web_url + "/swarm", data=form, timeout=30).json()["success"]

        def every_worker_running_its_share() -> dict[str, int] | None:
            report = locust_report(stack)
            shares = {w["id"].split("_")[0]: w["user_count"] for w in report["workers"] if w["state"] == "running"}
            return shares if sum(shares.values()) == users and len(shares) == 3 else None

        shares = wait_until(every_worker_running_its_share, timeout=60, interval=0.5, what="users on 3 workers")
        time.sleep(3)  # a few seconds of load
        httpx.post(stack.web_url + "/stop", timeout=60)
        # "stopped" once every worker has stopped, after its final report (sent before it says it stopped)
        final = wait_until(lambda: (r := locust_report(stack))["state"] == "stopped" and r, timeout=60,
                           interval=0.5, what="Locust stopped")  # fmt: skip
        served = httpx.get(stats_url, timeout=10).json()["requests"] - served_before
        sessions = query(admin, sessions_sql)[0][0] - sessions_before
        sent = {host: db_requests_sent(pid) for host, pid in containers.items()}
    finally:
        httpx.post(stack.web_url + "/stop", timeout=60)
        for pid in containers.values():
            db_request_rule(pid, "-D")
        stack.compose(*scale, "worker=1", "worker", timeout=300)
        wait_until(lambda: len(locust_report(stack)["workers"]) == 1, timeout=60, interval=0.5, what="1 worker")

    (row,) = [s for s in final["stats"] if s["name"] == f"{SCALED_TARGET} /db"]
    figures = {"locust": row["num_requests"], "failures": row["num_failures"], "served": served,
               "sessions": sessions, "users": shares, "sent": sent}  # fmt: skip
    print(figures)
    # the master's workers are the three containers, each ran its share of the users and sent requests
    assert set(shares) == set(containers) and set(shares.values()) == {users // 3}, figures
    assert all(n > 0 for n in sent.values()), figures
    # the target served exactly what the workers' network carried (nothing else asks it for /db now) ...
    assert sum(sent.values()) == served, figures
    # ... and Locust and PostgreSQL agree with it, as a run's summary checks them
    assert row["num_requests"] > 0 and row["num_failures"] == 0, figures
    assert counts_agree(
        row["num_requests"], served, sessions, users, TARGETS[SCALED_TARGET].session_per_request, row["num_failures"]
    ), figures


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
