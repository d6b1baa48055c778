"""One target as a service (`connbench serve TARGET`, also the containers' command): check its port and that
PostgreSQL answers, then hand over to its family (targets/families.py), which serves it in this process."""

from __future__ import annotations

import os
import sys
import time

from benchmarks.errors import ConnbenchError
from benchmarks.stack.postgres import redact
from benchmarks.stack.procs import check_port_free


def serve(target_id: str, dsn: str | None, host: str, port: int, workers: int, log_level: str = "warning") -> None:
    """Serve `target_id` until SIGTERM or Ctrl-C. `dsn`: default $CONNBENCH_DSN, then the targets' default."""
    from targets import families
    from targets.contract import DEFAULT_DSN
    from targets.registry import get_target

    target = get_target(target_id)
    dsn = dsn or os.environ.get("CONNBENCH_DSN") or DEFAULT_DSN
    if host in ("127.0.0.1", "localhost"):
        check_port_free(port, f"target {target.id}")
    probe(dsn)
    try:
        families.serve(target, dsn, host, port, workers, log_level)
    except ValueError as exc:
        raise ConnbenchError(str(exc)) from None


PROBE_PATIENCE_S = 60.0  # how long a PostgreSQL that is slow to answer or still starting is waited for


def probe(dsn: str, patience_s: float = PROBE_PATIENCE_S, connect_timeout_s: int = 5) -> None:
    """Connect once to `dsn`, or raise ConnbenchError with the first line of the reason.

    A refusal, a bad password or an unknown host fails at once. A connection that times out, or a server
    that says it is starting up, is tried again (a line on stderr says so) for up to `patience_s`: when a
    whole Docker stack starts on a busy machine, one connection can take longer than its 5 s
    (`connect_timeout_s`: libpq's, whole seconds, at least 2).
    """
    import psycopg
    from psycopg import errors

    deadline = time.monotonic() + patience_s
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=connect_timeout_s, application_name="connbench:probe"):
                return
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            slow = isinstance(exc, errors.ConnectionTimeout | errors.CannotConnectNow)
            if not slow or time.monotonic() >= deadline:
                raise ConnbenchError(f"cannot reach PostgreSQL at {redact(dsn)}: {first}") from None
            print(f"connbench: waiting for PostgreSQL at {redact(dsn)} ({first})", file=sys.stderr, flush=True)
            time.sleep(1)
