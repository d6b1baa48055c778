"""A network distance between the application side and the database side, without root: a TCP relay.

This kernel has no netem, and namespaces or TUN devices need root, so the distance is a userspace relay on
loopback: every byte is held RTT/2 in each direction. A relay alone would count one round trip too few,
because on loopback the kernel completes the TCP handshake at once, while across a network `connect()`
returns only after a round trip. So the client's bytes also wait until one RTT after the connection was
accepted: a client that sends at once (as PostgreSQL clients do) has its first bytes delivered 1.5 RTT after
connecting and its first answer after 2 RTT, exactly as across a network. A new connection then costs its
protocol's round trips plus one, and a query on an open connection costs one.

Threads rather than asyncio: epoll timers round every wait up to a whole millisecond, which would add up to
1 ms per hop; `time.sleep` keeps microseconds. At RTT 0 each direction is one thread doing recv/sendall.
The relay is its own process (`python -m benchmarks.stack.distance`), so it shares no interpreter lock with the
runner and its sampler, and dies with its parent.
"""

from __future__ import annotations

import argparse
import collections
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from benchmarks.errors import ConnbenchError
from benchmarks.stack.procs import Managed, die_with_parent, stop_process

BUFSIZE = 65536


# -- the relay (runs in its own process) ----------------------------------------------------------------
def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _pump(src: socket.socket, dst: socket.socket, delay: float, gate: float, broken: Callable[[], None]) -> None:
    """Copy src to dst until EOF, each chunk written `delay` s after it was read and never before `gate`."""
    if delay <= 0 and gate <= 0:
        try:
            while data := src.recv(BUFSIZE):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            broken()
        return
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = threading.Condition()

    def write() -> None:
        try:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    when, data = queue.popleft()
                wait = when - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            broken()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    data = b"x"
    while data:
        try:
            data = src.recv(BUFSIZE)
        except OSError:
            data = b""
        with ready:
            queue.append((max(time.monotonic(), gate) + delay, data))
            ready.notify()
    writer.join()


def _serve_connection(client: socket.socket, upstream: int, rtt: float) -> None:
    accepted = time.monotonic()
    try:
        server = socket.create_connection(("127.0.0.1", upstream))
    except OSError:
        client.close()  # the database side is down: the client sees the connection close
        return
    for s in (client, server):
        _nodelay(s)

    def broken() -> None:  # a reset on one side: end both (shutdown wakes the threads blocked in recv)
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    back = threading.Thread(target=_pump, args=(server, client, rtt / 2, 0.0, broken), daemon=True)
    back.start()
    # The client's bytes wait out the TCP handshake (one RTT after accept) before their half round trip.
    _pump(client, server, rtt / 2, accepted + rtt if rtt > 0 else 0.0, broken)
    back.join()
    client.close()
    server.close()


def _accept_loop(listener: socket.socket, upstream: int, rtt: float) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve_connection, args=(client, upstream, rtt), daemon=True).start()


def relay_main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.stack.distance --rtt MS UPSTREAM_PORT...`: print the listening ports, relay until
    killed."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.stack.distance")
    p.add_argument("--rtt", type=float, required=True, help="added round-trip time in milliseconds")
    p.add_argument("upstreams", type=int, nargs="+", help="loopback ports to relay to, one listener each")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.stack_size(256 * 1024)  # a few threads per connection; their stacks stay small
    listeners = []
    for upstream in args.upstreams:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        listeners.append(listener)
        threading.Thread(target=_accept_loop, args=(listener, upstream, args.rtt / 1000), daemon=True).start()
    print(" ".join(str(sock.getsockname()[1]) for sock in listeners), flush=True)
    while True:
        time.sleep(3600)


# -- the relay as a managed process ---------------------------------------------------------------------
class Distance(Managed):
    """A relay process adding `rtt_ms` to every round trip towards each of `upstreams` (loopback ports)."""

    def __init__(self, rtt_ms: float, upstreams: list[int]) -> None:
        if rtt_ms < 0:
            raise ConnbenchError(f"an RTT cannot be negative: {rtt_ms}")
        self.rtt_ms = rtt_ms
        self.upstreams = upstreams
        self.ports: dict[int, int] = {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "benchmarks.stack.distance", "--rtt", str(self.rtt_ms), *map(str, self.upstreams)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != len(self.upstreams):
            raise ConnbenchError(f"the delay relay did not start (exit {self.proc.poll()})")
        self.ports = dict(zip(self.upstreams, map(int, line), strict=True))

    def port_to(self, upstream: int) -> int:
        """The port that reaches `upstream` across the distance."""
        return self.ports[upstream]

    def cleanup(self) -> None:
        stop_process(self.proc, signal.SIGTERM, 5)
        self.proc = None


if __name__ == "__main__":
    relay_main()
