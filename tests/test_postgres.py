"""The embedded PostgreSQL also runs on the binaries shipped in the pgserver wheel (no system server)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import psycopg
import pytest

from benchmarks.stack.postgres import EmbeddedPostgres


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
