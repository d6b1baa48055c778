"""Small helpers shared by the embedded services: free ports, unprivileged users, log tails, stopping."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from benchmarks.errors import ConnbenchError

SERVICE_USER = "nobody"


def free_port(avoid: Collection[int] = ()) -> int:
    """Ask the kernel for a free TCP port on loopback, other than those in `avoid`: ports already chosen for
    something not listening yet, which the kernel would hand out again."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


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


def service_ids() -> dict[str, Any]:
    """Popen arguments that run a server as the service user with that user's own group and no other.

    Without `group` and `extra_groups`, Popen(user=...) keeps root's group 0 and supplementary groups.
    """
    user = service_user()
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True) if sys.platform == "linux" else None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive `sig` when connbench dies, even by SIGKILL.

    Linux's parent-death signal (prctl PR_SET_PDEATHSIG); no library offers it. Popen runs preexec_fn after
    its setuid (which would clear the setting), and the setting survives exec. Elsewhere: None (no-op).
    """
    if _libc is None:
        return None
    prctl = _libc.prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return arm


# Temporary directories of connbench's own services carry this file: who made them, so a later start can reclaim
# the ones whose owner died (SIGKILL leaves no chance to clean up).
OWNER_FILE = ".connbench-owner"
TEMP_PREFIX = "connbench-"


def _owner_alive(info: dict) -> bool:
    import psutil

    try:
        proc = psutil.Process(int(info["pid"]))
        return abs(proc.create_time() - float(info["created"])) < 1.0
    except (psutil.NoSuchProcess, KeyError, ValueError, TypeError):
        return False


def write_owner(path: Path) -> None:
    import psutil

    me = psutil.Process()
    (path / OWNER_FILE).write_text(json.dumps({"pid": me.pid, "created": me.create_time()}))


def _working_dirs() -> list[str]:
    """The working directories of the processes this user may see (PostgreSQL's are its data directory)."""
    import psutil

    cwds = []
    for proc in psutil.process_iter(["cwd"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["cwd"]:
                cwds.append(proc.info["cwd"])
    return cwds


def reclaim_orphans(root: Path | None = None) -> list[Path]:
    """Remove connbench temporary directories whose owner process is gone; return what was removed.

    A directory that a process still works in is left for a later start: the server of a killed owner may
    still be shutting down (the parent-death signal asks it to), and a removal under its feet would leave
    the files it writes last behind, without the owner file that marks them for reclaiming."""
    removed = []
    busy: list[str] | None = None
    for path in Path(root or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        owner = path / OWNER_FILE
        try:
            info = json.loads(owner.read_text())
        except (OSError, ValueError):
            continue  # not ours to judge: made by an older version, a test, or still being created
        if _owner_alive(info):
            continue
        busy = _working_dirs() if busy is None else busy
        if any(cwd == str(path) or cwd.startswith(f"{path}{os.sep}") for cwd in busy):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def other_connbench_runs() -> list[int]:
    """Pids of other `connbench run` / `connbench up` processes on this machine (not this one, nor its parents).

    Two runs at once share the cores, so neither's numbers are comparable with a run made alone.
    """
    import psutil

    mine = {os.getpid()} | {p.pid for p in psutil.Process().parents()}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["pid"] in mine or not cmd or not Path(cmd[0]).name.startswith("python"):
            continue  # (a wrapper such as flock or timeout waiting to start a run is not a run)
        for i, part in enumerate(cmd[:-1]):
            if (part == "benchmarks.cli" or Path(part).name == "connbench") and cmd[i + 1] in ("run", "up"):
                found.append(proc.info["pid"])
                break
    return found


def make_temp_dir(prefix: str) -> Path:
    """A fresh temporary directory that records its owner; directories left by dead owners are reclaimed first."""
    with contextlib.suppress(OSError):
        reclaim_orphans()
    path = Path(tempfile.mkdtemp(prefix=prefix))
    write_owner(path)
    return path


def make_service_dir(prefix: str) -> Path:
    """A fresh temporary directory owned by the service user (mode 0700, as PostgreSQL wants)."""
    path = make_temp_dir(prefix)
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
