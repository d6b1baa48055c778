"""Load from other hosts, proven: `connbench run --load-master` in one network namespace, two
`connbench load-worker`s in two others, the service and PostgreSQL on the host, all joined by veth.

The namespaces are separate hosts on one LAN: a bridge (a switch) in a namespace of its own, with a veth
to each host, the test's own namespace included. The bridge sits in its own namespace so that the host's
firewall (Docker's FORWARD DROP, with bridged traffic passed through iptables) never sees the hosts'
traffic and is left untouched. Every address is in a /24 the test picks among the unused 10.231.x.0/24.

Three counts of the same requests are compared: Locust's (the run's summary.csv), the target's own /stats
and PostgreSQL's (the target opens one session per request; log_connections logs each one, with its
application_name). The network's view says where the requests came from: in each client namespace an
iptables rule counts the packets carrying "GET /db" to the target, so both workers' shares are measured and
the master's own (the run's verify step) can be told apart.

Needs root (namespaces, iptables) and `ip`; skipped otherwise. Nothing here listens beyond the test's
addresses, and everything it creates is removed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest
from helpers import CONNBENCH, REPO, query, serve_command, stop, wait_until

from benchmarks.results.summary import counts_agree
from benchmarks.stack.postgres import EmbeddedPostgres
from benchmarks.stack.procs import free_port

TARGET = "per-request-asyncpg"  # one session per request: PostgreSQL counts the requests too
APP = f"connbench:{TARGET}"
MASTER_PORT = 5557  # Locust's default master port, as on real machines
WORKERS = ("a", "b")
DB_REQUEST = "GET /db"  # the first bytes of every /db request: what the namespaces' iptables rules count


def ip(*args: str, ns: str | None = None) -> str:
    """`ip ARGS` (in namespace `ns`), failing the test with ip's message."""
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def free_subnet() -> str:
    """The first 10.231.x of x = pid, pid+1, ... (mod 250) with no address on this host yet."""
    used = ip("-4", "-o", "addr")
    for i in range(250):
        prefix = f"10.231.{(os.getpid() + i) % 250 + 1}"
        if f" {prefix}." not in used:
            return prefix
    raise AssertionError("no free 10.231.x.0/24")


@dataclass
class Lan:
    """The hosts: this one (`host`, in the test's own namespace) and three namespaces on one bridge."""

    prefix: str
    namespaces: dict[str, str]  # role -> namespace name: "switch", "master", "a", "b"

    @property
    def host(self) -> str:
        return f"{self.prefix}.1"

    def addr(self, role: str) -> str:
        return f"{self.prefix}.{['master', *WORKERS].index(role) + 2}"

    def count_requests_to(self, role: str, dest: str, port: int) -> None:
        """An iptables rule in `role`'s namespace counting its packets that carry a /db request to dest:port."""
        rule = ["OUTPUT", "-d", dest, "-p", "tcp", "--dport", str(port), "-m", "string", "--string", DB_REQUEST,
                "--algo", "bm", "-j", "ACCEPT"]  # fmt: skip
        proc = subprocess.run(in_ns(self.namespaces[role], "iptables", "-A", *rule), capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"iptables cannot count requests in a namespace: {proc.stderr.strip()}")

    def requests_sent(self, role: str) -> int:
        out = subprocess.run(
            in_ns(self.namespaces[role], "iptables", "-L", "OUTPUT", "-v", "-x", "-n"),
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        (line,) = [line for line in out.splitlines() if f'"{DB_REQUEST}"' in line]
        return int(line.split()[0])


def _remove(namespaces: dict[str, str], root_end: str) -> None:
    """Kill whatever still runs in the namespaces (only this test's processes run there), then delete them."""
    for ns in namespaces.values():
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for ns in namespaces.values():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", root_end], capture_output=True)  # gone with its peer already


@pytest.fixture
def lan() -> Iterator[Lan]:
    """Namespaces master, a and b and this host, each on a veth to a bridge in a `switch` namespace."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if not (shutil.which("ip") and shutil.which("iptables")):
        pytest.skip("needs the ip and iptables commands")
    tag = f"cb{os.getpid()}"
    namespaces = {role: f"{tag}-{role}" for role in ("switch", "master", *WORKERS)}
    root_end = f"{tag}h"  # the host's end of its veth (at most 15 characters)
    created: dict[str, str] = {}
    try:
        for role, ns in namespaces.items():
            proc = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.skip(f"`ip netns add` failed: {proc.stderr.strip()}")
            created[role] = ns
        lan = Lan(free_subnet(), namespaces)
        switch = namespaces["switch"]
        ip("link", "add", "br0", "type", "bridge", ns=switch)
        ip("link", "set", "br0", "up", ns=switch)
        ip("link", "add", root_end, "type", "veth", "peer", "name", "to-host", "netns", switch)
        ip("link", "set", "to-host", "master", "br0", "up", ns=switch)
        ip("addr", "add", f"{lan.host}/24", "dev", root_end)
        ip("link", "set", root_end, "up")
        for role in ("master", *WORKERS):
            ns = namespaces[role]
            ip("link", "add", f"to-{role}", "type", "veth", "peer", "name", "eth0", "netns", ns, ns=switch)
            ip("link", "set", f"to-{role}", "master", "br0", "up", ns=switch)
            ip("addr", "add", f"{lan.addr(role)}/24", "dev", "eth0", ns=ns)
            ip("link", "set", "eth0", "up", ns=ns)
            ip("link", "set", "lo", "up", ns=ns)  # free_port() and friends bind 127.0.0.1
        yield lan
    finally:
        _remove(created, root_end)


@contextmanager
def postgres_on(lan: Lan) -> Iterator[EmbeddedPostgres]:
    """The suite's embedded PostgreSQL, also listening on the host's LAN address and letting the LAN in
    (scram-sha-256, as on loopback), logging every connection."""
    settings = {"listen_addresses": f"127.0.0.1,{lan.host}", "log_connections": "on"}
    with EmbeddedPostgres(settings=settings) as pg:
        assert pg.dir is not None
        with open(pg.dir / "data" / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {lan.prefix}.0/24 scram-sha-256\n")
        query(pg.admin_dsn, "SELECT pg_reload_conf()")
        over_lan = pg.admin_dsn.replace("@127.0.0.1:", f"@{lan.host}:")
        wait_until(lambda: _connects(over_lan), timeout=10, what="PostgreSQL over the LAN address")
        yield pg


def _connects(dsn: str) -> bool:
    try:
        query(dsn, "SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def sessions_logged(pg: EmbeddedPostgres, application_name: str, start: int = 0) -> int:
    """Sessions PostgreSQL logged as authorized for `application_name`, in its log from byte `start` on."""
    text = pg.log_path.read_bytes()[start:].decode(errors="replace")
    return len(re.findall(rf"connection authorized: .*application_name={re.escape(application_name)}$", text, re.M))


@contextmanager
def serve_on(host: str, dsn: str) -> Iterator[str]:
    """`connbench serve TARGET --host HOST` (helpers.start_target serves on loopback only); its URL."""
    port = free_port()
    url = f"http://{host}:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            serve_command(TARGET, port, dsn, "--host", host),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(lambda: proc.poll() is not None or _ready(url), timeout=60, what=f"{TARGET} ready")
            log.seek(0)
            assert proc.poll() is None, log.read().decode(errors="replace")
            yield url
        finally:
            stop(proc)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def requests_served(url: str) -> int:
    return httpx.get(url + "/stats", timeout=10).json()["requests"]


def end_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group it leads (it and its Locust), SIGKILL if it does not go."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


def test_load_from_two_worker_hosts(lan: Lan, tmp_path: Path) -> None:
    master = f"{lan.addr('master')}:{MASTER_PORT}"
    out = tmp_path / "run"
    with ExitStack() as stack:
        pg = stack.enter_context(postgres_on(lan))
        url = stack.enter_context(serve_on(lan.host, pg.dsn))
        port = int(url.rsplit(":", 1)[1])
        for role in ("master", *WORKERS):
            lan.count_requests_to(role, lan.host, port)
        for role in WORKERS:
            worker = subprocess.Popen(
                in_ns(lan.namespaces[role], *CONNBENCH, "load-worker", "--master", master, "--url", f"mine={url}"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip
            stack.callback(end_group, worker)
        served_before, log_start = requests_served(url), pg.log_path.stat().st_size
        dsn = pg.dsn.replace("@127.0.0.1:", f"@{lan.host}:")  # the master's host reaches it over the LAN
        run = subprocess.Popen(
            in_ns(lan.namespaces["master"], *CONNBENCH, "run", "--profile", "smoke", "--scenarios", "steady",
                  "--no-baseline", "--no-report", "--dsn", dsn, "--url", f"mine={url}", "--app-name", f"mine={APP}",
                  "--load-master", master, "--load-workers", str(len(WORKERS)), "--out", str(out)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=REPO,
            start_new_session=True,
        )  # fmt: skip
        stack.callback(end_group, run)
        _, err = run.communicate(timeout=120)
        served = requests_served(url) - served_before
        pg_sessions = sessions_logged(pg, APP, log_start)
        sent = {role: lan.requests_sent(role) for role in ("master", *WORKERS)}

    assert run.returncode == 0, err[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["load_master"] == master
    row = pd.read_csv(out / "summary.csv").set_index("cell_id").loc["steady.mine.u8.r1"]
    figures = {"locust": row["locust_requests"], "target": row["target_requests"], "served": served,
               "pg_sessions": pg_sessions, "sessions_opened": row["sessions_opened"], **sent}  # fmt: skip
    print(figures)
    # how many requests 1 s of load makes depends on the machine's speed (81 on a busy one)
    assert row["valid"] and row["failures"] == 0 and row["locust_requests"] > 0, figures
    # the master waited for both workers (--expect-workers), and both worker hosts sent load across the LAN
    assert manifest["load_workers"] == len(WORKERS) and all(sent[role] > 0 for role in WORKERS), figures
    # the target served exactly what the network carried, and PostgreSQL logged one session per request
    assert served == sum(sent.values()) == pg_sessions, figures
    assert row["target_requests"] == served_before + served, figures  # the summary's is the target's /stats
    # Locust's count against the load alone (the counts less the run's verify step, sent from the master's
    # host), as tests/test_run.py checks it: within the requests in flight at the stop
    load = served - sent["master"]
    assert counts_agree(row["locust_requests"], load, row["sessions_opened"], int(row["users"]), True), figures
