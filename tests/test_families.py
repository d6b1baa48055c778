"""The target families beside Python: the registry and its manifests, and the prisma (Node) and worker
(workerd) targets against a real PostgreSQL, started by `connbench serve` like every other target.

These tests also pin what the seeds' systems really do (README "The seeds' claims, measured").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import (
    REPO,
    peak_connections,
    query,
    run_connbench,
    sessions,
    shutdown_rows,
    start_target,
    target_connections,
    wait_until,
)

from benchmarks.errors import ConnbenchError
from benchmarks.run.scenario import load_profile
from benchmarks.stack.postgres import EmbeddedPostgres
from benchmarks.stack.procs import free_port
from targets import families
from targets.python.drivers import DRIVERS
from targets.python.strategies import STRATEGIES
from targets.registry import BUILT_IN, TARGETS, UnknownTarget, build_registry
from targets.yours import registry_from_json, run_registry, to_json, url_targets

POOL_MAX = 10
FAMILY_TARGETS = {
    "prisma": ["prisma-global", "prisma-connect", "prisma-per-request", "prisma-leaky"],
    "worker": ["worker-global", "worker-per-request", "worker-pgbouncer"],
    "node": ["node-pg-pool", "node-pg-client", "node-postgres-js"],
    "sqlalchemy": [
        "sqlalchemy-queue",
        "sqlalchemy-pre-ping",
        "sqlalchemy-null",
        "sqlalchemy-null-pgbouncer",
        "sqlalchemy-queue-pgbouncer",
    ],
    "django": ["django-per-request", "django-persistent", "django-pool", "django-per-request-pgbouncer"],
}
OWN_DRIVER = {"node-postgres-js": "postgres.js"}  # a strategy whose driver is not its family's


def statuses(responses: list[httpx.Response]) -> Counter:
    return Counter(r.status_code for r in responses)


@pytest.fixture(scope="module")
def small_pg() -> Iterator[EmbeddedPostgres]:
    """A server with a low connection cap, for prisma-leaky."""
    with EmbeddedPostgres(max_connections=20) as server:
        yield server


def non_superuser_slots(pg: EmbeddedPostgres) -> int:
    return int(query(pg.admin_dsn, "SHOW max_connections")[0][0]) - int(
        query(pg.admin_dsn, "SHOW superuser_reserved_connections")[0][0]
    )


# -- the registry --------------------------------------------------------------------------------------
def test_every_target_names_its_family_in_stats(pg) -> None:
    for tid in ("pool-lazy-asyncpg", "prisma-global", "worker-per-request"):
        with start_target(tid, pg.dsn) as t:
            assert t.stats()["family"] == TARGETS[tid].family


def test_registry_has_every_family_target() -> None:
    for family, ids in FAMILY_TARGETS.items():
        assert [t for t, x in TARGETS.items() if x.family == family] == ids
        for tid in ids:
            assert TARGETS[tid].strategy == tid
            assert TARGETS[tid].driver == OWN_DRIVER.get(tid, families.FAMILIES[family].driver)
    assert {t.family for t in TARGETS.values()} >= {"python", *FAMILY_TARGETS}
    assert TARGETS["prisma-per-request"].session_per_request and not TARGETS["prisma-global"].session_per_request


def test_the_python_family_is_a_folder_with_a_manifest_like_the_others() -> None:
    python = families.FAMILIES["python"]
    assert python.path == REPO / "targets" / "python" and python.app and not python.command
    assert list(families.FAMILIES)[0] == "python"  # its targets come first, as they always have
    assert [t.id for t in python.targets] == [f"{s}-{d}" for s in STRATEGIES for d in DRIVERS]
    assert all(t.family == "python" and t.id == f"{t.strategy}-{t.driver}" for t in python.targets)
    assert families.missing_reason("python") is None and not python.build_dir.exists()  # nothing to build
    # the family's own code may be imported first, before the manifests are read
    first = subprocess.run([sys.executable, "-c", "import targets.python.strategies"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr


def test_the_registry_is_built_once_and_a_run_with_user_targets_gets_its_own() -> None:
    assert list(BUILT_IN) == [t.id for f in families.FAMILIES.values() for t in f.targets]
    with pytest.raises(TypeError):
        BUILT_IN["x"] = BUILT_IN["global-asyncpg"]  # type: ignore[index]
    mine = url_targets(["mine=http://127.0.0.1:1"], [])
    run = build_registry(mine)
    assert list(run) == [*BUILT_IN, "mine"] and "mine" not in BUILT_IN and run.families[-1] == "yours"
    again = registry_from_json(to_json(mine))
    assert list(again) == list(run) and again["mine"] == run["mine"] and again["mine"].url == "http://127.0.0.1:1"
    assert registry_from_json("") is BUILT_IN
    with pytest.raises(ConnbenchError, match="two targets are named 'mine'"):
        run_registry([*mine, *mine])
    with pytest.raises(UnknownTarget, match="unknown target 'nosuch'; valid targets: global-asyncpg, "):
        run.get_target("nosuch")


def test_node_families_share_their_contract_from_one_folder_that_is_no_family() -> None:
    shared = REPO / "targets" / "node-shared" / "contract.ts"
    assert shared.is_file() and "node-shared" not in families.FAMILIES
    for name in ("prisma", "worker", "node"):
        family = families.FAMILIES[name]
        assert "../node-shared/contract.ts" in family.inputs  # a change rebuilds every one
        source = next((family.path / "src").glob("*.ts")).read_text()
        assert 'from "../../node-shared/contract.ts"' in source
        # the Node families share their HTTP server too; workerd has its own fetch handler
        assert ('from "../../node-shared/server.ts"' in source) == (family.runtime == "node")
    assert not list((REPO / "targets").glob("*/src/contract.ts"))


def test_scenarios_select_families_and_smoke_includes_them() -> None:
    smoke = {sc.name: sc for sc in load_profile("smoke")}
    for family_ids in FAMILY_TARGETS.values():
        assert any(smoke["steady"].selects(tid) for tid in family_ids)  # each family in the default smoke run
        for tid in family_ids:
            assert smoke["steady"].selects(tid, named=True)
    assert smoke["cold-start"].selects("prisma-connect")  # what $connect() changes at the first request
    assert smoke["shutdown"].selects("prisma-global")
    full = {sc.name: sc for sc in load_profile("full")}
    assert full["shutdown"].selects("prisma-leaky") and full["conn-cap"].selects("prisma-leaky")
    assert not full["conn-cap"].selects("worker-global")


def write_family(root: Path, name: str, steps: str, extra: str = "") -> Path:
    path = root / name
    path.mkdir()
    (path / "family.toml").write_text(
        f'runtime = "sh"\nrequires = ["sh"]\n[build]\ninputs = ["in.txt"]\nsteps = {steps}\n'
        f'[serve]\ncommand = ["sh", "-c", "exit 0"]\n[strategies.only]\nsummary = "x"\n{extra}'
    )
    (path / "in.txt").write_text("1")
    return path


def test_a_failed_build_is_one_line_and_remembered_until_the_inputs_change(tmp_path: Path) -> None:
    path = write_family(tmp_path, "broken", '[["sh", "-c", "echo ran >> runs.txt; echo boom; exit 3"]]')
    family = families.load_family(path)
    reason = families.build(family)
    assert reason is not None and reason.startswith("build failed at `sh -c` (exit 3; log: ")
    assert "\n" not in reason and "boom" in (path / "build" / "build.log").read_text()
    assert families.build(family) == reason  # cached: not run again for the same inputs
    assert (path / "runs.txt").read_text().count("ran") == 1
    (path / "in.txt").write_text("2")
    families.build(family)
    assert (path / "runs.txt").read_text().count("ran") == 2


def test_a_good_build_runs_once_and_installs_only_when_its_inputs_change(tmp_path: Path) -> None:
    install = 'install = ["sh", "-c", "echo installed >> runs.txt"]\ninstall_inputs = ["lock.txt"]\n'
    path = write_family(tmp_path, "good", '[["sh", "-c", "echo ran >> runs.txt"]]\n' + install)
    (path / "lock.txt").write_text("1")
    family = families.load_family(path)
    assert families.build(family) is None and families.build(family) is None
    assert (path / "runs.txt").read_text().split() == ["installed", "ran"]
    (path / "in.txt").write_text("2")
    assert families.build(family) is None
    assert (path / "runs.txt").read_text().split() == ["installed", "ran", "ran"]
    (path / "lock.txt").write_text("2")
    assert families.build(family) is None
    assert (path / "runs.txt").read_text().split() == ["installed", "ran", "ran", "installed", "ran"]
    assert [t.id for t in family.targets] == ["good-only"]


def test_a_manifest_typo_names_file_and_key(tmp_path: Path) -> None:
    path = write_family(tmp_path, "typo", "[]", extra="sesion_per_request = true\n")
    with pytest.raises(ValueError, match=r"typo/family.toml \[strategies.only\]: unknown key 'sesion_per_request'"):
        families.load_family(path)
    path = write_family(tmp_path, "both", "[]", extra='[docker]\nstage = "node"\nimage = "x"\n')
    with pytest.raises(ValueError, match=r"both/family.toml \[docker\]: unknown key 'image'"):
        families.load_family(path)
    path = write_family(tmp_path, "twice", "[]")
    text = (path / "family.toml").read_text().replace("[serve]\n", '[serve]\napp = "targets.python.app:create_app"\n')
    (path / "family.toml").write_text(text)
    with pytest.raises(ValueError, match=r"twice/family.toml: \[serve\] needs a command or an app \(one of them\)"):
        families.load_family(path)
    path = write_family(tmp_path, "coded", "[]")
    text = (path / "family.toml").read_text()
    (path / "family.toml").write_text('targets = "targets.python.strategies:family_targets"\n' + text)
    with pytest.raises(ValueError, match=r"coded/family.toml: give either 'targets' or \[strategies.<name>\] tables"):
        families.load_family(path)


@pytest.fixture(scope="module")
def path_without_node(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH with every program of the usual one except node, npm and npx."""
    bin_dir = tmp_path_factory.mktemp("nonode")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if name not in ("node", "npm", "npx", "corepack") and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(os.path.join(directory, name))
    return str(bin_dir)


def test_without_node_the_families_are_not_runnable_and_the_rest_runs(path_without_node: str, pg) -> None:
    out = run_connbench("targets", env={"PATH": path_without_node, "COLUMNS": "250"})
    assert out.returncode == 0, out.stderr
    rows = {line.split("│")[1].strip(): line for line in out.stdout.splitlines() if line.count("│") > 3}
    for family, ids in FAMILY_TARGETS.items():
        for tid in ids:
            if families.FAMILIES[family].runtime == "python":
                assert "│ yes" in rows[tid], rows[tid]
            else:
                assert "no: node is not installed" in rows[tid], rows[tid]
    assert "│ yes" in rows["pool-eager-asyncpg"]
    port = str(free_port())
    served = run_connbench("serve", "prisma-global", "--port", port, "--dsn", pg.dsn, env={"PATH": path_without_node})
    assert served.returncode == 1 and "Traceback" not in served.stderr
    assert served.stderr.strip() == (
        "connbench: error: prisma-global cannot run here: node is not installed (the prisma family needs node>=20, npm)"
    )
    with start_target("pool-lazy-asyncpg", pg.dsn, env={"PATH": path_without_node}) as t:
        assert t.get("/db").status_code == 200


# -- worker: the seed's Worker on workerd --------------------------------------------------------------
def test_worker_global_alternates_ok_and_failure(pg) -> None:
    """The seed's bug: a module-level client reused across requests answers 200, fail, 200, fail ...

    Each request is its own I/O context in workerd: the second request cannot use the socket the first one
    opened ("Cannot perform I/O on behalf of a different request"); pg swallows the error and the query
    never settles, so the request ends at CONNBENCH_REQUEST_TIMEOUT. workerd closes a request's sockets
    when it ends, so the next request finds the pool's client dead and opens a new one: it succeeds.
    """
    env = {"CONNBENCH_REQUEST_TIMEOUT": "1"}
    with start_target("worker-global", pg.dsn, env=env) as t:
        responses = [t.get("/db") for _ in range(8)]
        assert [r.status_code for r in responses] == [200, 503] * 4, [r.text for r in responses]
        assert {r.json()["error"] for r in responses[1::2]} == {"TimeoutError"}
        stats = t.stats()
        assert stats["family"] == "worker" and stats["errors"] == {"TimeoutError": 4}
        assert stats["requests"] == 8 and stats["pool"]["pools_created"] == 1
        # a failed request leaves its checked-out client behind: a new connection for each success
        assert stats["connections_opened"] == 4
        assert target_connections(pg.admin_dsn, "worker-global") == 0  # workerd closed every socket


def test_worker_global_fails_for_good_after_pool_max_failures(pg) -> None:
    with start_target("worker-global", pg.dsn, env={"CONNBENCH_REQUEST_TIMEOUT": "1", "CONNBENCH_POOL_MAX": "2"}) as t:
        codes = [t.get("/db").status_code for _ in range(7)]
        assert codes == [200, 503, 200, 503, 503, 503, 503]


def test_worker_per_request_always_succeeds(pg) -> None:
    with start_target("worker-per-request", pg.dsn) as t:
        before = sessions(pg.admin_dsn)
        assert [t.get("/db").status_code for _ in range(8)] == [200] * 8
        assert sessions(pg.admin_dsn) >= before + 8
        stats = t.stats()
        assert stats["connections_opened"] == 8 and stats["pool"]["pools_created"] == 8
        wait_until(lambda: target_connections(pg.admin_dsn, "worker-per-request") == 0, 15, what="released")


def test_worker_pgbouncer_opens_no_session_per_request(dsn_for, pg) -> None:
    """Hyperdrive's pattern: a client per request, as worker-per-request, but to a pooler that keeps its server
    connections, so PostgreSQL sees no new session per request (the distance scenario puts it near the app)."""
    with start_target("worker-pgbouncer", dsn_for("worker-pgbouncer")) as t:
        assert t.get("/db").status_code == 200  # PgBouncer's server connection is open
        before = sessions(pg.admin_dsn)
        n = 12
        assert [t.get("/db").status_code for _ in range(n)] == [200] * n
        assert sessions(pg.admin_dsn) - before <= 1  # at most one more server connection for twelve clients
        stats = t.stats()
        assert stats["connections_opened"] == n + 1 and stats["pool"]["pools_created"] == n + 1  # to PgBouncer


def test_worker_targets_speak_tls_to_a_tls_server() -> None:
    """workerd verifies certificates: with --tls it trusts connbench's throw-away one (worker-tls.capnp)."""
    with EmbeddedPostgres(tls=True) as tls_pg:
        assert "sslmode=require" in tls_pg.dsn
        with start_target("worker-per-request", tls_pg.dsn) as t:
            assert [t.get("/db").status_code for _ in range(4)] == [200] * 4
        with start_target("worker-global", tls_pg.dsn) as t:  # the seed's client, over TLS while a request holds it
            held = threading.Thread(target=t.get, args=("/db?work_ms=1000&hold=1",))
            held.start()
            ssl_query = (
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                " WHERE a.application_name = 'connbench:worker-global'"
            )
            wait_until(lambda: query(tls_pg.admin_dsn, ssl_query) == [(True,)], 10, what="its TLS connection")
            held.join()
    assert families.DB_CA_ENV not in os.environ  # the certificate is forgotten with its server


# -- prisma: Prisma Client on Node ---------------------------------------------------------------------
def test_prisma_per_request_opens_a_session_per_request(pg) -> None:
    with start_target("prisma-per-request", pg.dsn) as t:
        before = sessions(pg.admin_dsn)
        n = 12
        assert [t.get("/db").status_code for _ in range(n)] == [200] * n
        assert sessions(pg.admin_dsn) >= before + n
        stats = t.stats()
        assert stats["connections_opened"] == n and stats["pool"]["pools_disconnected"] == n
        assert sum(stats["acquire_ms"].values()) == n  # one checkout (a connect) per request
        assert target_connections(pg.admin_dsn, "prisma-per-request") == 0  # $disconnect() closed each


def test_prisma_global_stays_within_its_pool_under_32_concurrent_requests(pg) -> None:
    with start_target("prisma-global", pg.dsn) as t:
        responses, peak = peak_connections(
            pg.admin_dsn, "prisma-global", lambda: [r for _ in range(3) for r in t.burst(32)]
        )
        assert statuses(responses) == Counter({200: 96})
        stats = t.stats()
        assert 1 <= stats["connections_opened"] <= POOL_MAX
        assert 1 <= peak <= POOL_MAX
        assert stats["pool"]["pool_size"] <= POOL_MAX and stats["pool"]["pools_created"] == 1
        assert sum(stats["query_ms"].values()) == 96 and 1 <= sum(stats["acquire_ms"].values()) <= 96


def test_prisma_connect_opens_no_connection_before_ready(pg) -> None:
    """$connect() with the pg adapter opens no connection: at /ready PostgreSQL shows none, as for
    prisma-global; the first query opens the first one."""
    with start_target("prisma-connect", pg.dsn) as t:
        assert target_connections(pg.admin_dsn, "prisma-connect") == 0
        assert t.stats()["connections_opened"] == 0
        assert t.get("/db").status_code == 200
        assert target_connections(pg.admin_dsn, "prisma-connect") == 1


def test_prisma_leaky_climbs_past_its_pool_then_53300(small_pg: EmbeddedPostgres) -> None:
    """A new PrismaClient per request without $disconnect(): each keeps its connection until pg's
    idleTimeoutMillis (10 s), so sequential requests climb past the pool size to the cap and then fail with
    53300; the exit hook needs a connection too and fails while the slots are taken."""
    cap = non_superuser_slots(small_pg)
    tid = "prisma-leaky"
    with start_target(tid, small_pg.dsn) as t:
        for _ in range(POOL_MAX + 2):
            assert t.get("/db").status_code == 200
        assert target_connections(small_pg.admin_dsn, tid) > POOL_MAX
        codes = [t.get("/db") for _ in range(cap)]
        assert [r.status_code for r in codes] == [200] * (cap - POOL_MAX - 2) + [503] * (POOL_MAX + 2)
        assert {r.json()["sqlstate"] for r in codes if r.status_code == 503} == {"53300"}
        assert target_connections(small_pg.admin_dsn, tid) == cap
        stats = t.stats()
        assert stats["pool"]["pools_created"] == stats["requests"] and stats["pool"]["pools_disconnected"] == 0
        # pg's idle timeout (10 s) closes the leaked connections; the pools themselves are never ended
        wait_until(lambda: target_connections(small_pg.admin_dsn, tid) == 0, 30, what="idle timeout")
        assert t.get("/db").status_code == 200


# -- SIGTERM -------------------------------------------------------------------------------------------
def sigterm_under_load(t, users: int = 8) -> tuple[int, int]:
    """SIGTERM while `users` threads send /db back to back; (exit status, requests answered 200)."""
    stop = threading.Event()
    ok = Counter()

    def load() -> None:
        with httpx.Client(timeout=15) as client:
            while not stop.is_set():
                try:
                    if client.get(t.url + "/db").status_code == 200:
                        ok["n"] += 1
                except httpx.HTTPError:
                    if t.proc.poll() is not None:
                        return
                    time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(users)]
    for th in threads:
        th.start()
    try:
        wait_until(lambda: ok["n"] >= 20, 30, what="load to be running")
        t.proc.send_signal(signal.SIGTERM)
        status = t.proc.wait(30)
    finally:
        stop.set()
        for th in threads:
            th.join()
    return status, ok["n"]


@pytest.mark.parametrize("target_id", ["prisma-global", "prisma-connect", "prisma-per-request"])
def test_prisma_sigterm_under_load_runs_the_exit_hook(target_id: str, pg) -> None:
    with start_target(target_id, pg.dsn) as t:
        pid = t.proc.pid
        status, _ = sigterm_under_load(t)
        assert status == 0, t.log()
        assert "exit hook logged" in t.log() and "exit hook failed" not in t.log()
        assert shutdown_rows(pg.superuser_dsn("connbench"), target_id, pid) == 1
        assert target_connections(pg.admin_dsn, target_id) == 0


def test_prisma_leaky_sigterm_runs_the_exit_hook_with_one_user(pg) -> None:
    with start_target("prisma-leaky", pg.dsn) as t:
        pid = t.proc.pid
        status, _ = sigterm_under_load(t, users=1)
        assert status == 0, t.log()
        assert shutdown_rows(pg.superuser_dsn("connbench"), "prisma-leaky", pid) == 1
        # the leaked pools' connections went with the process
        wait_until(lambda: target_connections(pg.admin_dsn, "prisma-leaky") == 0, 15, what="released")


def test_worker_sigterm_exits_at_once_without_an_exit_hook(pg) -> None:
    with start_target("worker-per-request", pg.dsn) as t:
        pid = t.proc.pid
        status, _ = sigterm_under_load(t, users=4)
        assert status == 0, t.log()
        assert shutdown_rows(pg.superuser_dsn("connbench"), "worker-per-request", pid) == 0


def test_prisma_workers_share_the_port_and_each_runs_its_hook(pg) -> None:
    with start_target("prisma-global", pg.dsn, extra_args=("--workers", "2")) as t:
        pids = {httpx.get(t.url + "/stats", timeout=10).json()["pid"] for _ in range(8)}  # a connection each
        assert len(pids) == 2 and t.proc.pid not in pids
        assert t.get("/db").status_code == 200
        assert t.terminate() == 0
        for pid in pids:
            assert shutdown_rows(pg.superuser_dsn("connbench"), "prisma-global", pid) == 1


def test_bad_db_parameters_answer_400(pg) -> None:
    with start_target("prisma-global", pg.dsn) as t:
        r = t.get("/db?work_ms=abc")
        assert r.status_code == 400 and r.json()["error"] == "BadRequest"
        assert t.get("/db?work_ms=20&hold=1").status_code == 200
        assert t.stats()["requests"] == 1


def test_build_command_reports_every_family() -> None:
    out = run_connbench("build", timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{name}: ready" for name in families.FAMILIES]
    bad = run_connbench("build", "nosuch")
    assert bad.returncode == 1 and bad.stderr.startswith("connbench: error: unknown family 'nosuch'")


def test_node_modules_and_builds_are_not_tracked() -> None:
    tracked = subprocess.run(["git", "ls-files", "targets"], cwd=REPO, capture_output=True, text=True).stdout
    assert "node_modules" not in tracked and "/build/" not in tracked
    for name, family in families.FAMILIES.items():
        if family.install:  # npm ci from the lockfile
            assert f"targets/{name}/package-lock.json" in tracked.splitlines()
