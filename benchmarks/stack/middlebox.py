"""A middlebox between the targets and PostgreSQL that forgets idle connections and then drops them silently.

NAT gateways and cloud load balancers forget a TCP flow that stayed idle past their timeout (AWS's NAT
gateway 350 s, Azure's load balancer 4 min, GCP's NAT 10 min); the flow's next packets, either way, vanish.
Neither end gets a FIN or a RST: the client's query is retransmitted until its TCP gives up (about 15
minutes), and PostgreSQL keeps the session until its own keepalive notices.

Here the middlebox is a network namespace joined to the host by a veth pair:

    target --> 10.x.y.2:<pg port> (the namespace: conntrack, DNAT, masquerade) --> 10.x.y.1:<pg port> PostgreSQL

The namespace NATs every flow, so each flow lives in its conntrack table. Its established-flow timeout is
the idle limit, and `nf_conntrack_tcp_loose=0` stops it from adopting a flow again mid-stream: once
forgotten, a flow's next packet is INVALID and dropped before any socket sees it. Nothing on the host
changes except the veth's address; deleting the namespace removes the veth, the addresses and the rules.
PostgreSQL listens on the host's end of the veth as well (EmbeddedPostgres `also_listen`).

No library sets up namespaces and netfilter rules (pyroute2 covers links and addresses, not iptables), so
this runs `ip` and `iptables` (root). A guard process, which dies with connbench, deletes the namespace
even when connbench is killed by SIGKILL; namespaces whose run has died are removed at the next start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys

import psutil

from benchmarks.errors import ConnbenchError
from benchmarks.stack.procs import Managed, die_with_parent, stop_process

PREFIX = "cbmb"  # namespace cbmb-<pid>-<n>, veth cbmb<pid>h/... (interface names: at most 15 characters)
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")  # one /30 per middlebox: .1 the host's end, .2 the namespace's


def unavailable() -> str | None:
    """Why a middlebox cannot be set up on this machine, or None."""
    if os.geteuid() != 0:
        return "needs root (a network namespace with its own conntrack)"
    missing = [tool for tool in ("ip", "iptables", "sysctl") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install iproute2 iptables procps)"
    return None


def _sh(*args: str, netns: str | None = None) -> None:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise ConnbenchError(f"middlebox: `{' '.join(args)}` failed: {(out.stderr or out.stdout).strip()}")


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def remove_stale() -> None:
    """Delete the middlebox namespaces of runs that are no longer alive."""
    for name in _namespaces():
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit() and not psutil.pid_exists(int(parts[1])):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _free_block(n: int) -> ipaddress.IPv4Network:
    """A /30 of SUBNET that no interface of the host uses, starting from one chosen by pid."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    words = [line.split() for line in out.splitlines()]
    used = [ipaddress.IPv4Interface(w[w.index("inet") + 1]).network for w in words if "inet" in w[:-1]]
    blocks: list[ipaddress.IPv4Network] = list(SUBNET.subnets(new_prefix=30))
    start = (os.getpid() * 7 + n) % len(blocks)
    for block in blocks[start:] + blocks[:start]:
        if not any(block.overlaps(u) for u in used):
            return block
    raise ConnbenchError(f"middlebox: no free /30 left in {SUBNET}")


class Middlebox(Managed):
    """A namespace that NATs the targets' connections and silently drops flows idle longer than `idle_s`."""

    count = 0  # middleboxes made by this process, for unique names

    def __init__(self, idle_s: float) -> None:
        reason = unavailable()
        if reason:
            raise ConnbenchError(f"a silent-drop middlebox {reason}")
        if idle_s < 1:
            raise ConnbenchError(f"the middlebox's idle limit is whole seconds, at least 1 (got {idle_s})")
        Middlebox.count += 1
        self.idle_s = int(idle_s)  # conntrack's timeouts are whole seconds
        self.name = f"{PREFIX}-{os.getpid()}-{Middlebox.count}"
        self.veth = f"{PREFIX}{os.getpid() % 100000}x{Middlebox.count}"[:15]
        self.block: ipaddress.IPv4Network | None = None
        self.guard: subprocess.Popen | None = None

    @property
    def host_address(self) -> str:
        """The host's end of the veth: where PostgreSQL also listens."""
        assert self.block is not None
        return str(self.block[1])

    @property
    def address(self) -> str:
        """The namespace's end: what the targets connect to, and the address PostgreSQL sees them come from."""
        assert self.block is not None
        return str(self.block[2])

    def start(self) -> None:
        remove_stale()
        self.block = _free_block(Middlebox.count)
        ns, inside = self.name, "eth0"
        # The guard before the namespace: once it runs, a SIGKILL of connbench still removes the namespace.
        self.guard = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.stack.middlebox", ns, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        assert self.guard.stdout is not None
        if self.guard.stdout.readline().strip() != b"ready":  # its SIGTERM handler is in place
            raise ConnbenchError("middlebox: its guard process did not start")
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", inside, "netns", ns)
        _sh("ip", "addr", "add", f"{self.host_address}/30", "dev", self.veth)
        _sh("ip", "link", "set", self.veth, "up")
        _sh("ip", "addr", "add", f"{self.address}/30", "dev", inside, netns=ns)
        _sh("ip", "link", "set", inside, "up", netns=ns)
        _sh("ip", "link", "set", "lo", "up", netns=ns)
        _sh("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
            f"net.ipv4.conf.{inside}.send_redirects=0", netns=ns)  # fmt: skip
        rules = [
            ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-d", self.address, "-j", "DNAT",
             "--to-destination", self.host_address],
            ["-t", "nat", "-A", "POSTROUTING", "-o", inside, "-j", "MASQUERADE"],
            # A packet of a flow the namespace no longer knows: dropped, never answered.
            ["-t", "mangle", "-A", "PREROUTING", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"],
        ]  # fmt: skip
        for rule in rules:
            _sh("iptables", *rule, netns=ns)
        # conntrack exists in the namespace once a rule uses it: its timeouts can be set only now.
        _sh("sysctl", "-qw", f"net.netfilter.nf_conntrack_tcp_timeout_established={self.idle_s}",
            "net.netfilter.nf_conntrack_tcp_loose=0", netns=ns)  # fmt: skip

    def dropped_packets(self) -> int:
        """Packets dropped so far as belonging to a forgotten flow."""
        out = subprocess.run(
            ["ip", "netns", "exec", self.name, "iptables", "-t", "mangle", "-L", "PREROUTING", "-v", "-x", "-n"],
            capture_output=True,
            text=True,
        ).stdout
        return sum(int(line.split()[0]) for line in out.splitlines() if "DROP" in line)

    def cleanup(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.veth], capture_output=True)  # gone with the namespace
        if self.guard is not None:
            stop_process(self.guard, signal.SIGKILL, 5)
            if self.guard.stdout is not None:
                self.guard.stdout.close()
            self.guard = None


def guard_main(name: str, parent: int) -> None:
    """Wait for SIGTERM (connbench died: the parent-death signal) and delete the namespace `name`; the same at
    once if connbench (`parent`) died before the signal was armed."""

    def remove(*_: object) -> None:
        with contextlib.suppress(Exception):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, remove)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is connbench's to handle
    if os.getppid() != parent:
        remove()
    print("ready", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    guard_main(sys.argv[1], int(sys.argv[2]))
