"""Session fixtures: one real PostgreSQL (and PgBouncer in front of it) for the whole test session.

Test files import their helpers with `from helpers import start_target, ...` (tests/helpers.py).
`pg` is an EmbeddedPostgres with the default max_connections (100); targets use `pg.dsn` (non-superuser
role `connbench`), tests ask PostgreSQL what it sees through `pg.admin_dsn`. Tests that need different
server settings (a low connection cap, restarts) start their own EmbeddedPostgres. `dsn_for(target)` picks
the DSN a target needs (PgBouncer's for the pgbouncer targets); `serve(target)` runs one target for a test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from benchmarks.stack.pgbouncer import PgBouncer, missing_reason
from benchmarks.stack.postgres import EmbeddedPostgres, find_bindir, seeded_cluster


@pytest.fixture(scope="session", autouse=True)
def seeded(request: pytest.FixtureRequest) -> None:
    """The seeded cluster every PostgreSQL of the session copies, made first: the `connbench` commands the tests
    start inherit it (CONNBENCH_PG_SEED) instead of each running initdb and the seed. The fast lane (tests/unit)
    starts no PostgreSQL."""
    if any("unit" not in item.path.parent.parts for item in request.session.items):
        seeded_cluster(find_bindir())


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as server:
        data_dir = server.dir
        yield server
    assert data_dir is not None and not os.path.exists(data_dir), f"{data_dir} left behind"


@pytest.fixture(scope="session")
def bouncer(pg: EmbeddedPostgres) -> Iterator[PgBouncer]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with PgBouncer(pg) as pgb:
        pgb_dir = pgb.dir
        yield pgb
    assert pgb_dir is not None and not os.path.exists(pgb_dir), f"{pgb_dir} left behind"


@pytest.fixture
def dsn_for(pg: EmbeddedPostgres, request: pytest.FixtureRequest):
    """`dsn_for(target)`: the DSN a target should use (the PgBouncer one for pgbouncer targets)."""
    from targets.registry import get_target

    def pick(target_id: str) -> str:
        if get_target(target_id).via_pgbouncer:
            return request.getfixturevalue("bouncer").dsn
        return pg.dsn

    return pick


@pytest.fixture
def serve(dsn_for):
    """`serve(target, **kw)`: start `connbench serve` for a target (its DSN picked by `dsn_for` unless
    `dsn=` is given), wait for /ready, return a helpers.RunningTarget; every one is stopped at test end."""
    from contextlib import ExitStack

    from helpers import start_target

    with ExitStack() as stack:

        def start(target_id: str, dsn: str | None = None, **kw):
            return stack.enter_context(start_target(target_id, dsn or dsn_for(target_id), **kw))

        yield start


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory):
    """The whole smoke profile as a user runs it (`connbench run --profile smoke`, the baseline included, no
    report), once for the session: the report's tests, the pool-size and slow-work checks and the SIGKILL
    scenario's all read this one run folder."""
    from helpers import run_connbench

    out = tmp_path_factory.mktemp("smoke-profile") / "run"
    proc = run_connbench("run", "--profile", "smoke", "--out", str(out), "--no-report", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
