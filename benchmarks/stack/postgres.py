"""Embedded PostgreSQL: a throw-away cluster on a free loopback port, seeded with the World table.

The suite starts its own server so that every run sees the same settings and so that fault scenarios can
restart it or lower `max_connections`. Targets connect as the non-superuser role `connbench` to the database
`connbench`; the harness connects as `postgres` to the database `postgres`, so superuser-reserved slots keep
the sampler working at the connection cap and `pg_stat_database.sessions` of `connbench` counts only targets.

Closed by default, as a production server: every connection, TCP or Unix socket, authenticates with
scram-sha-256 and a password generated for this cluster (one for `connbench`, another for `postgres`), which
only the DSNs carry. With `tls=True` the server also speaks TLS with a throw-away self-signed certificate.

initdb and the seed run once per process tree: every cluster is a copy of one stopped, seeded cluster that
then gets its own passwords (about 0.3 s against 2 s; see seeded_cluster). A run starts one cluster per server
configuration, and the tests start dozens.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks.errors import ConnbenchError
from benchmarks.stack.procs import (
    Managed,
    check_port_free,
    die_with_parent,
    free_port,
    log_tail,
    make_service_dir,
    service_ids,
    stop_process,
)
from targets.families import DB_CA_ENV

INIT_SQL = Path(__file__).parents[1] / "sql" / "init.sql"
DB_NAME = "connbench"
DB_USER = "connbench"
# A benchmark of connection handling, not of durability: skip fsync so the disk does not add noise.
BASE_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    "password_encryption": "scram-sha-256",
}
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def make_dsn(
    user: str, password: str, port: int, dbname: str, sslmode: str = "disable", host: str = "127.0.0.1"
) -> str:
    """A URL DSN, on loopback by default. The passwords are hex, so they need no quoting."""
    return f"postgresql://{user}:{password}@{host}:{port}/{dbname}?sslmode={sslmode}"


def libpq_env(dsn: str) -> dict[str, str]:
    """The DSN as libpq's PG* variables, for a libpq tool run without the password on its command line."""
    from psycopg.conninfo import conninfo_to_dict

    names = {"host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
             "password": "PGPASSWORD", "sslmode": "PGSSLMODE"}  # fmt: skip
    return {names[k]: str(v) for k, v in conninfo_to_dict(dsn).items() if k in names}


def redact(dsn: str) -> str:
    """The DSN without its password, for logs and error messages."""
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


def find_bindir() -> Path:
    """Where `postgres` and `initdb` live: $CONNBENCH_PG_BINDIR, PATH, pg_config, Debian's dirs, pgserver."""
    candidates: list[Path] = []
    override = os.environ.get("CONNBENCH_PG_BINDIR")
    if override is not None:
        candidates.append(Path(override))
    else:
        which = shutil.which("initdb")
        if which:
            candidates.append(Path(which).resolve().parent)
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
            if out.returncode == 0:
                candidates.append(Path(out.stdout.strip()))
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
        candidates += [Path(p) for p in debian]
        spec = importlib.util.find_spec("pgserver")
        if spec and spec.origin:
            candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for bindir in candidates:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    raise ConnbenchError(
        "no PostgreSQL server binaries found (looked in "
        + (", ".join(str(c) for c in candidates) or "PATH")
        + "): install Debian's postgresql package or `pip install pgserver`, or set CONNBENCH_PG_BINDIR"
    )


def server_version(bindir: Path | None = None) -> str:
    bindir = bindir or find_bindir()
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.split()[2]  # "postgres (PostgreSQL) 15.18 (Debian ...)"


class EmbeddedPostgres(Managed):
    """One PostgreSQL cluster in a temporary directory; a context manager that always cleans up."""

    dbname = DB_NAME  # the database the targets use (benchmarks/stack/external.py: the --dsn's)

    def __init__(
        self,
        port: int | None = None,
        max_connections: int = 100,
        settings: dict[str, str] | None = None,
        tls: bool = False,
        also_listen: tuple[str, str] | None = None,
    ) -> None:
        """`also_listen`: (address, client) to listen on besides loopback, and the one client address there
        that may log in (a middlebox's ends: benchmarks/stack/middlebox.py)."""
        self.bindir = find_bindir()
        self.also_listen = also_listen
        self.tls = tls
        if tls and shutil.which("openssl") is None:
            raise ConnbenchError("--tls needs the openssl command to make a certificate (apt-get install openssl)")
        self.password = secrets.token_hex(16)  # the targets' role
        self.admin_password = secrets.token_hex(16)  # the superuser
        if port is not None:
            check_port_free(port, "PostgreSQL")
        self.port = port or free_port()
        self.settings = {**BASE_SETTINGS, "max_connections": str(max_connections), **(settings or {})}
        if also_listen:
            self.settings["listen_addresses"] += f",{also_listen[0]}"
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    # -- addresses -------------------------------------------------------------------------------------
    @property
    def sslmode(self) -> str:
        """What the targets' DSNs ask for: `require` with TLS, else `disable` (no wasted SSLRequest round trip)."""
        return "require" if self.tls else "disable"

    @property
    def dsn(self) -> str:
        """What targets use: the `connbench` role on the `connbench` database."""
        return self.dsn_at(self.port)

    def dsn_at(self, port: int, host: str = "127.0.0.1") -> str:
        """The targets' DSN with another port (a PgBouncer's or a relay's in front of this server) or host."""
        return make_dsn(DB_USER, self.password, port, DB_NAME, self.sslmode, host)

    @property
    def admin_dsn(self) -> str:
        """What the harness uses: superuser on the `postgres` database (not counted as a target session)."""
        return self.superuser_dsn("postgres")

    def superuser_dsn(self, dbname: str) -> str:
        return make_dsn("postgres", self.admin_password, self.port, dbname)

    @property
    def tls_files(self) -> tuple[Path, Path]:
        """The certificate and its key (PgBouncer serves the same pair)."""
        assert self.dir is not None
        return self.dir / "server.crt", self.dir / "server.key"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    # -- lifecycle -------------------------------------------------------------------------------------
    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, cwd=self.dir, **service_ids())

    def start(self) -> None:
        """The first time: a copy of the seeded cluster (see seeded_cluster) that gets this cluster's own
        passwords; then launch the server and wait until it answers."""
        if self.dir is None:
            seed = seeded_cluster(self.bindir)
            self.dir = make_service_dir("connbench-pg-")
            # cp -a keeps the service user's ownership and the data directory's mode 0700
            out = subprocess.run(["cp", "-a", str(seed / "data"), str(self.dir)], capture_output=True, text=True)
            if out.returncode != 0:
                raise ConnbenchError(f"could not copy the seeded cluster: {out.stderr.strip()}")
            if self.tls:
                self._make_certificate()
                os.environ[DB_CA_ENV] = str(self.tls_files[0])  # inherited by every target connbench starts
            self._set_passwords()
            return
        self._launch()

    def _set_passwords(self) -> None:
        """Give a copied cluster this cluster's passwords: started with pg_hba.conf letting only the superuser in,
        and only through the Unix socket in the cluster's directory (mode 0700: the service user's and root's),
        then closed again (scram-sha-256 for every connection) and reloaded."""
        assert self.dir is not None
        hba = self.dir / "data" / "pg_hba.conf"
        closed = hba.read_text()
        if self.also_listen:
            closed += f"host all all {self.also_listen[1]}/32 scram-sha-256\n"
        hba.write_text("local all postgres trust\n")
        self._launch(wait=False)
        socket = f"host={self.dir} port={self.port} user=postgres dbname=postgres"
        self._wait_ready(socket)
        with psycopg.connect(socket, autocommit=True, application_name="connbench:harness") as conn:
            for role, password in (("postgres", self.admin_password), (DB_USER, self.password)):
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            hba.write_text(closed)
            conn.execute("SELECT pg_reload_conf()")
        self._wait_ready()  # TCP, with the password: once the reload has taken the closed pg_hba.conf

    def _init(self) -> None:
        """initdb and the seed: a new cluster, the one seeded_cluster keeps."""
        first = self.dir is None
        if first:
            self.dir = make_service_dir("connbench-pg-seed-")
            pwfile = self.dir / "pwfile"
            pwfile.touch(mode=0o600)
            pwfile.write_text(self.admin_password + "\n")
            if service_ids():
                shutil.chown(pwfile, user=service_ids()["user"], group=service_ids()["group"])
            out = self._run(
                [str(self.bindir / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres",
                 "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", f"--pwfile={pwfile}",
                 "--encoding=UTF8", "--locale=C", "--no-sync"]
            )  # fmt: skip
            pwfile.unlink()
            if out.returncode != 0:
                raise ConnbenchError(f"initdb failed: {(out.stderr or out.stdout).strip().splitlines()[-1]}")
        self._launch()
        if first:
            self._seed()

    def _launch(self, wait: bool = True) -> None:
        assert self.dir is not None
        args = [str(self.bindir / "postgres"), "-D", str(self.dir / "data"), "-p", str(self.port),
                "-c", f"unix_socket_directories={self.dir}"]  # fmt: skip
        settings = dict(self.settings)
        if self.tls:
            cert, key = self.tls_files
            settings.update(ssl="on", ssl_cert_file=str(cert), ssl_key_file=str(key))
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            # Own session: a Ctrl-C in the terminal must not reach the server before we stop it ourselves.
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGQUIT),
                **service_ids(),  # immediate shutdown if connbench dies
            )
        if wait:
            self._wait_ready()

    def _wait_ready(self, dsn: str | None = None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ConnbenchError(
                    f"PostgreSQL failed to start (exit {self.proc.returncode}); log:\n" + log_tail(self.log_path)
                )
            try:
                with psycopg.connect(dsn or self.admin_dsn, connect_timeout=2, application_name="connbench:harness"):
                    return
            except psycopg.OperationalError:
                time.sleep(0.02)
        raise ConnbenchError(
            f"PostgreSQL did not accept connections in {timeout:.0f} s; log:\n{log_tail(self.log_path)}"
        )

    def _make_certificate(self) -> None:
        """A self-signed P-256 certificate for 127.0.0.1 in the cluster's directory (removed with it).

        It names 127.0.0.1 as its subjectAltName too, so a client that verifies it (workerd: it has no
        `sslmode=require` without verification) accepts it once trusted; DB_CA_ENV says where it is."""
        cert, key = self.tls_files
        out = self._run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"]
        )  # fmt: skip
        if out.returncode != 0:
            raise ConnbenchError(f"openssl could not make a certificate: {out.stderr.strip().splitlines()[-1:]}")
        key.chmod(0o600)  # PostgreSQL refuses a key that others can read

    def _seed(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{self.password}'")
            # pg_monitor: with this DSN as --dsn (`connbench db`), connbench's sampler sees every session
            conn.execute(f"GRANT pg_monitor TO {DB_USER}")
            conn.execute(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
        with psycopg.connect(self.dsn, autocommit=True, application_name="connbench:harness") as conn:
            conn.execute(INIT_SQL.read_text())

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the server: smart (wait for clients), fast (disconnect clients) or immediate (crash-like)."""
        stop_process(self.proc, STOP_SIGNALS[mode], timeout)
        self.proc = None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self._launch()

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (its backends are its children)."""
        return self.proc.pid if self.running() and self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> None:
        """Stop the server (immediately if it will not go) and remove its directory."""
        try:
            self.stop("fast", timeout=10)
        finally:
            if self.dir is not None:
                if os.environ.get(DB_CA_ENV) == str(self.tls_files[0]):
                    del os.environ[DB_CA_ENV]
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def version(self) -> str:
        return server_version(self.bindir)


SEED_ENV = "CONNBENCH_PG_SEED"  # the seeded cluster of the connbench process that made it, for its children


@functools.cache
def seeded_cluster(bindir: Path) -> Path:
    """A stopped cluster with the seed, which every cluster copies: initdb and the seed run once per process
    tree. The first process to need one makes it, removes it at exit (after a crash, the next connbench
    process reclaims it: make_temp_dir) and names it in SEED_ENV, so that the connbench commands it starts
    (the tests start dozens) copy it too. A copy's passwords are its own (EmbeddedPostgres._set_passwords)."""
    stamp = {"server": server_version(bindir), "init_sql": hashlib.sha256(INIT_SQL.read_bytes()).hexdigest()}
    inherited = os.environ.get(SEED_ENV)
    if inherited:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((Path(inherited) / "seed.json").read_text()) == stamp:
                return Path(inherited)
    seed = EmbeddedPostgres()
    atexit.register(seed.cleanup)
    seed._init()
    seed.stop("fast")
    assert seed.dir is not None
    (seed.dir / "seed.json").write_text(json.dumps(stamp))
    os.environ[SEED_ENV] = str(seed.dir)
    return seed.dir
