"""A target's process: `connbench serve <target>` (or a user's own command) started with its DSN in the
environment, and the wait for its /ready."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.stack.procs import die_with_parent
from targets.registry import get_target
from targets.yours import is_user_target


def target_command(target: str, dsn: str, port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    """The command that starts a target and what it adds to the environment: `connbench serve`, or for a
    user's service the command of its target file."""
    if is_user_target(t := get_target(target)):
        return t.launch(port, dsn, workers)
    return [sys.executable, "-m", "benchmarks.cli", "serve", target, "--port", str(port), "--workers", str(workers)], {}


def start_target(
    target: str, dsn: str, port: int, workers: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    cmd, own_env = target_command(target, dsn, port, workers)
    env = {**env, **own_env}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "CONNBENCH_DSN": dsn},  # not --dsn: the password stays out of `ps`
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0, path: str = "/ready") -> float | None:
    """Time (epoch) when `path` (/ready) first answered 200, or None when the target died or never got ready."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None
            try:
                if client.get(f"{url}{path}").status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    return None
