"""The connection path between the targets and PostgreSQL: the distance, and PgBouncer at its place.

    direct:             targets -> distance -> PostgreSQL
    pgbouncer near-db:  targets -> distance -> PgBouncer -> PostgreSQL   (every client connect crosses it)
    pgbouncer near-app: targets -> PgBouncer -> distance -> PostgreSQL   (only its pooled server connections do)

    silent drop:        targets -> middlebox -> PostgreSQL                (benchmarks/stack/middlebox.py)

At RTT 0 there is no relay: loopback as it is. The harness (sampler, faults, tests) talks to PostgreSQL
directly through `pg.admin_dsn`, never across the distance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from benchmarks.errors import ConnbenchError
from benchmarks.stack.distance import Distance
from benchmarks.stack.external import Database
from benchmarks.stack.middlebox import Middlebox
from benchmarks.stack.pgbouncer import DEFAULT_POOL_SIZE, PgBouncer
from benchmarks.stack.postgres import EmbeddedPostgres
from targets.registry import get_target

POOLERS = ("near-db", "near-app")
DEFAULT_POOLER = "near-db"


def parse_poolers(value: str | Sequence[str]) -> tuple[str, ...]:
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    bad = [v for v in items if v not in POOLERS]
    if bad or not items:
        raise ConnbenchError(f"--pooler takes {' or '.join(POOLERS)} (comma-separated), got {value!r}")
    return tuple(dict.fromkeys(items))


def parse_rtts(value: str | Sequence[float]) -> tuple[float, ...]:
    """`--rtt 0,10,50` (milliseconds) as numbers; one clear line for anything else."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        rtts = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ConnbenchError(f"--rtt takes milliseconds, comma-separated (e.g. 0,10), got {value!r}") from None
    if not rtts or any(not 0 <= r <= 10_000 for r in rtts):
        raise ConnbenchError(f"--rtt takes milliseconds between 0 and 10000, got {value!r}")
    return tuple(dict.fromkeys(int(r) if r == int(r) else r for r in rtts))


def parse_tls(value: str | Sequence[bool]) -> tuple[bool, ...]:
    """`--tls` (on), `--tls off`, `--tls on,off` (one set of cells each)."""
    if not isinstance(value, str):
        return tuple(dict.fromkeys(bool(v) for v in value))
    words = {"on": True, "off": False}
    items = [v.strip() for v in value.split(",")]
    if not items or any(v not in words for v in items):
        raise ConnbenchError(f"--tls takes on, off or on,off, got {value!r}")
    return tuple(dict.fromkeys(words[v] for v in items))


class Network(contextlib.ExitStack):
    """The PgBouncers and the relay for one RTT in front of a running PostgreSQL; all stopped on exit."""

    def __init__(
        self,
        pg: Database,
        rtt_ms: float = 0,
        poolers: Sequence[str] = (),
        pool_size: int = DEFAULT_POOL_SIZE,
        pgbouncer_port: int | None = None,
        middlebox: Middlebox | None = None,
    ) -> None:
        super().__init__()
        if middlebox is not None and (rtt_ms or poolers):
            raise ConnbenchError("a silent-drop middlebox runs on loopback, without a distance or PgBouncer")
        self.middlebox = middlebox
        self.pg = pg
        self.rtt_ms = rtt_ms
        self.poolers = tuple(poolers)
        self.pool_size = pool_size
        self.pgbouncer_port = pgbouncer_port
        self.bouncers: dict[str, PgBouncer] = {}
        self.distance: Distance | None = None

    def __enter__(self) -> Network:
        super().__enter__()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        if "near-db" in self.poolers:
            self.bouncers["near-db"] = self.enter_context(
                PgBouncer(self._embedded(), port=self.pgbouncer_port, pool_size=self.pool_size)
            )
        if self.rtt_ms > 0:
            upstreams = [self.pg.port] + [b.port for b in self.bouncers.values()]
            self.distance = self.enter_context(Distance(self.rtt_ms, upstreams))
        if "near-app" in self.poolers:
            port = None if self.bouncers else self.pgbouncer_port
            self.bouncers["near-app"] = self.enter_context(
                PgBouncer(self._embedded(), port=port, pool_size=self.pool_size, upstream_port=self._far(self.pg.port))
            )

    def _embedded(self) -> EmbeddedPostgres:
        if not isinstance(self.pg, EmbeddedPostgres):
            raise ConnbenchError("PgBouncer runs only in front of the PostgreSQL connbench started, not --dsn")
        return self.pg

    def _far(self, port: int) -> int:
        """The port that reaches `port` (on the database side) from the application side."""
        return self.distance.port_to(port) if self.distance else port

    def dsn(self, target_id: str | None = None, pooler: str = DEFAULT_POOLER) -> str:
        """The DSN a target uses: PgBouncer's at `pooler` for the pgbouncer targets, else PostgreSQL's."""
        if target_id is not None and get_target(target_id).via_pgbouncer:
            return self.pooler_dsn(pooler)
        if self.middlebox is not None:
            return self._embedded().dsn_at(self.pg.port, self.middlebox.address)
        return self.pg.dsn_at(self._far(self.pg.port))

    def pooler_dsn(self, pooler: str) -> str:
        if pooler not in self.bouncers:
            raise ConnbenchError(f"no PgBouncer {pooler} in this run")
        port = self.bouncers[pooler].port
        return self.pg.dsn_at(self._far(port) if pooler == "near-db" else port)

    def lines(self) -> Iterator[tuple[str, str]]:
        """(name, DSN) of each entry point, as `connbench db` and `connbench up` print them."""
        yield "postgres", self.dsn()
        for pooler in self.bouncers:
            yield ("pgbouncer" if len(self.bouncers) == 1 else f"pgbouncer-{pooler}"), self.pooler_dsn(pooler)

    def describe(self) -> str:
        where = f"{self.rtt_ms} ms RTT away (a delay relay)" if self.rtt_ms else "on loopback"
        if self.middlebox is not None:
            where = f"behind a middlebox that silently drops connections idle {self.middlebox.idle_s} s"
        tls = "TLS" if self.pg.tls else "no TLS"
        placed = ", ".join(f"PgBouncer {p}" for p in self.bouncers)
        return f"# the database side is {where}, scram-sha-256, {tls}" + (f"; {placed}" if placed else "")
