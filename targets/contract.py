"""What every target family reads and answers, whatever its language: the settings it takes from the
environment, GET /db's parameters and the buckets of the /stats histograms.

The Node families read the same in targets/node-shared/contract.ts (same names, same defaults, same keys);
the harness reads the settings from here (scenario files, the compose file, README's table).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_DSN = "postgresql://connbench@127.0.0.1:5432/connbench"
WORLD_ROWS = 10_000
# The World query of every Python target, with its driver's placeholder for the id: WORLD_SQL.format(id="$1").
WORLD_SQL = "SELECT id, randomnumber FROM world WHERE id = {id}"
# libpq reports a refused connection without its SQLSTATE; these server messages are 53300's (the targets'
# errors and the harness reading a target's log both go by them).
TOO_MANY_MESSAGES = ("too many clients already", "remaining connection slots are reserved")
# The parameters of GET /db (README's HTTP contract); scenario files may set and sweep them.
DB_PARAMS = {
    "work_ms": "milliseconds of slow non-database work per request (asyncio.sleep, like a call to another service)",
    "hold": "1: do that work while holding the connection; 0 (default): after releasing it",
}


def db_params(query: dict[str, str]) -> tuple[float, bool]:
    """(work seconds, hold) from /db's query string; ValueError names a bad parameter."""
    try:
        work_ms = float(query.get("work_ms") or 0)
    except ValueError:
        raise ValueError(f"work_ms must be a number of milliseconds, got {query['work_ms']!r}") from None
    hold = query.get("hold") or "0"
    if not 0 <= work_ms <= 60_000 or hold not in ("0", "1"):
        raise ValueError("work_ms must be between 0 and 60000 and hold 0 or 1")
    return work_ms / 1000, hold == "1"


@dataclass(frozen=True)
class Setting:
    env: str
    default: float
    doc: str


SETTINGS: dict[str, Setting] = {
    "pool_min": Setting("CONNBENCH_POOL_MIN", 10, "connections pool-eager opens before ready (at most pool_max)"),
    "pool_max": Setting("CONNBENCH_POOL_MAX", 10, "largest size of every application pool"),
    "pool_timeout": Setting("CONNBENCH_POOL_TIMEOUT", 5.0, "seconds a request waits for a pooled connection"),
    "connect_timeout": Setting("CONNBENCH_CONNECT_TIMEOUT", 5.0, "seconds to open one connection"),
    "request_timeout": Setting("CONNBENCH_REQUEST_TIMEOUT", 10.0, "seconds before /db answers 503 TimeoutError"),
    "shutdown_timeout": Setting("CONNBENCH_SHUTDOWN_TIMEOUT", 10.0, "seconds the exit hook may take on SIGTERM"),
    "idle_timeout": Setting(
        "CONNBENCH_IDLE_TIMEOUT",
        0.0,
        "seconds after which a pool closes a connection idle that long (where the library has only an age "
        "limit, one that old); 0: the library's own default",
    ),
    "tcp_keepalive": Setting(
        "CONNBENCH_TCP_KEEPALIVE",
        0.0,
        "> 0: TCP keepalive on every database connection, first probe after this many idle seconds (then every "
        "second); 0: the library's or the OS's default. libpq (psycopg, Django), node-postgres and postgres.js; "
        "asyncpg has no keepalive option",
    ),
    "pool_check": Setting(
        "CONNBENCH_POOL_CHECK",
        0,
        "1: the pool checks a connection before handing it out (psycopg_pool's `check`, for the psycopg pools and "
        "Django's pool: a round trip per checkout); 0: no check, the library's default. SQLAlchemy's is its own "
        "target (sqlalchemy-pre-ping); asyncpg's, node-postgres's and postgres.js's pools have no such option",
    ),
    "tcp_user_timeout": Setting(
        "CONNBENCH_TCP_USER_TIMEOUT",
        0.0,
        "> 0: seconds data sent on a database connection may stay unacknowledged before the kernel gives the "
        "connection up (TCP_USER_TIMEOUT); 0: the OS's default (retransmissions for about 15 minutes). libpq "
        "(psycopg, Django) only: asyncpg, node-postgres and postgres.js have no such option",
    ),
}


@dataclass(frozen=True)
class Settings:
    """Target settings, read from the environment (see README's table, generated from SETTINGS)."""

    pool_min: int = 10
    pool_max: int = 10
    pool_timeout: float = 5.0
    connect_timeout: float = 5.0
    request_timeout: float = 10.0
    shutdown_timeout: float = 10.0
    idle_timeout: float = 0.0
    tcp_keepalive: float = 0.0
    pool_check: int = 0
    tcp_user_timeout: float = 0.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for name, s in SETTINGS.items():
            raw = env.get(s.env)
            kind = type(s.default) if not isinstance(s.default, int) else int
            try:
                values[name] = kind(raw) if raw not in (None, "") else kind(s.default)
            except ValueError:
                raise ValueError(f"{s.env}={raw!r} is not a number") from None
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def libpq_tcp(keepalive: float, user_timeout: float) -> dict[str, int]:
    """libpq's parameters for tcp_keepalive and tcp_user_timeout (seconds): keepalives as libpq_keepalives, and
    tcp_user_timeout in milliseconds (none for 0)."""
    out: dict[str, int] = dict(libpq_keepalives(keepalive))
    if user_timeout > 0:
        out["tcp_user_timeout"] = max(1, round(user_timeout * 1000))
    return out


def libpq_keepalives(seconds: float) -> dict[str, int]:
    """libpq's keepalive parameters for tcp_keepalive `seconds` (whole seconds, at least 1): the first probe after
    that long idle, then one a second, the connection given up after 3 unanswered; none for 0 (the OS's
    default: keepalives on, first probe after 2 hours)."""
    if seconds <= 0:
        return {}
    return {"keepalives": 1, "keepalives_idle": max(1, round(seconds)), "keepalives_interval": 1, "keepalives_count": 3}


def fine_bucket(response_time: float) -> float:
    """The /stats histograms' bucket of a duration in ms: 0.1 ms below 10 ms, 1 ms below 100 ms, then ~2
    significant figures (Locust's own scheme)."""
    if response_time < 10:
        return round(response_time, 1)
    if response_time < 100:
        return round(response_time)
    if response_time < 1000:
        return int(round(response_time, -1))
    return int(round(response_time, -2))
