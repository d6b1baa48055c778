"""Small helpers shared by the embedded services: free ports, unprivileged users, log tails, stopping."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from benchmarks.errors import ConnbenchError

SERVICE_USER = "nobody"


def free_port() -> int:
    """Ask the kernel for a free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(port: int, what: str) -> None:
    """Fail with a clear message when `port` is already taken on 127.0.0.1."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConnbenchError(f"port {port} for {what} is already in use on 127.0.0.1 ({exc.strerror})") from None


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Wait until something accepts TCP connections on 127.0.0.1:port (False on timeout or death)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def service_user() -> str | None:
    """The user to run servers as: None for a normal user, an unprivileged one when we are root.

    PostgreSQL's initdb and PgBouncer refuse to run as root.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ConnbenchError(f"running as root needs the unprivileged user {SERVICE_USER!r}") from None
    return SERVICE_USER


def make_service_dir(prefix: str) -> Path:
    """A fresh temporary directory owned by the service user (mode 0700, as PostgreSQL wants)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    user = service_user()
    if user:
        shutil.chown(path, user=user, group=pwd.getpwnam(user).pw_gid)
    return path


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
    """Send `sig`, wait up to `timeout`, then SIGKILL. Returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
        except ProcessLookupError:
            pass
    return proc.wait()


class Managed:
    """A set of processes and files that `start()` creates and `cleanup()` always removes.

    As a context manager it cleans up on any exit, also when `start()` itself fails half-way or on Ctrl-C.
    """

    def start(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
