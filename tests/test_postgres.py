"""The embedded PostgreSQL: every cluster a copy of the seeded one, with passwords of its own; it also runs on the
binaries shipped in the pgserver wheel (no system server)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import psycopg
import pytest

from benchmarks.stack.postgres import SEED_ENV, EmbeddedPostgres, make_dsn


def test_each_cluster_is_a_copy_of_the_seed_with_passwords_of_its_own(pg: EmbeddedPostgres) -> None:
    seed = Path(os.environ[SEED_ENV])  # the session's (conftest.py), which this process made
    assert (seed / "data" / "PG_VERSION").is_file() and pg.dir is not None and pg.dir != seed
    with EmbeddedPostgres() as other:
        assert (other.password, other.admin_password) != (pg.password, pg.admin_password)
        with psycopg.connect(other.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM world").fetchone() == (10_000,)  # the seed's table
        for dsn in (other.dsn_at(pg.port), make_dsn("postgres", other.admin_password, pg.port, "postgres")):
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(dsn, connect_timeout=5).close()  # another copy's password does not open this one


def test_pgserver_wheel_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.origin
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    monkeypatch.setenv("CONNBENCH_PG_BINDIR", str(bindir))
    with EmbeddedPostgres(max_connections=20) as pg:
        assert pg.bindir == bindir
        data_dir = pg.dir
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM world").fetchone() == (10000,)
            assert conn.execute("SHOW max_connections").fetchone() == ("20",)
    assert data_dir is not None and not data_dir.exists()
