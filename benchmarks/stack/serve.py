"""One target as a service (`connbench serve TARGET`, also the containers' command): check its port and that
PostgreSQL answers, then hand over to its family (targets/families.py), which serves it in this process."""

from __future__ import annotations

import os

from benchmarks.errors import ConnbenchError
from benchmarks.stack.postgres import redact
from benchmarks.stack.procs import check_port_free


def serve(target_id: str, dsn: str | None, host: str, port: int, workers: int, log_level: str = "warning") -> None:
    """Serve `target_id` until SIGTERM or Ctrl-C. `dsn`: default $CONNBENCH_DSN, then the targets' default."""
    import psycopg

    from targets import families
    from targets.contract import DEFAULT_DSN
    from targets.registry import get_target

    target = get_target(target_id)
    dsn = dsn or os.environ.get("CONNBENCH_DSN") or DEFAULT_DSN
    if host in ("127.0.0.1", "localhost"):
        check_port_free(port, f"target {target.id}")
    try:
        with psycopg.connect(dsn, connect_timeout=3, application_name="connbench:probe"):
            pass
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConnbenchError(f"cannot reach PostgreSQL at {redact(dsn)}: {first}") from None
    try:
        families.serve(target, dsn, host, port, workers, log_level)
    except ValueError as exc:
        raise ConnbenchError(str(exc)) from None
