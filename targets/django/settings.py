"""Django settings of the django family (DJANGO_SETTINGS_MODULE): one app-less project whose only difference
between targets is `DATABASES["default"]`, chosen by the target's strategy (STRATEGIES).

The target id comes from CONNBENCH_TARGET and the database from CONNBENCH_DSN, parsed by libpq itself
(psycopg's `conninfo_to_dict`, URL or key=value form); the target settings are targets/contract.py's.
"""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from targets.contract import DEFAULT_DSN, Settings, libpq_tcp

FAMILY = "django"
TARGET = os.environ.get("CONNBENCH_TARGET") or f"{FAMILY}-per-request"
CONNBENCH = Settings.from_env()

# What each strategy sets in DATABASES["default"], on top of the connection parameters of `database()`.
STRATEGIES: dict[str, dict[str, Any]] = {
    # Django's default: CONN_MAX_AGE = 0 closes the connection at the end of each request.
    "per-request": {"CONN_MAX_AGE": 0},
    # Persistent connections: each gunicorn thread keeps its own for up to 600 s, checked before reuse.
    "persistent": {"CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True},
    # Django 5.1+'s psycopg pool (psycopg_pool.ConnectionPool), shared by a process's threads; a connection
    # goes back to it at the end of each request (Django requires CONN_MAX_AGE = 0 with a pool).
    "pool": {"CONN_MAX_AGE": 0, "pool": True},
    # As per-request, through PgBouncer in transaction mode: Django's documented settings for it.
    "per-request-pgbouncer": {"CONN_MAX_AGE": 0, "DISABLE_SERVER_SIDE_CURSORS": True, "pgbouncer": True},
}


def database(dsn: str, target: str, settings: Settings) -> dict[str, Any]:
    """DATABASES["default"] for `target` (django-<strategy>) on `dsn`."""
    strategy = target.removeprefix(f"{FAMILY}-")
    if strategy not in STRATEGIES:
        raise ValueError(f"{target!r} is not a target of the {FAMILY} family")
    chosen = dict(STRATEGIES[strategy])
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    options: dict[str, Any] = {
        **params,  # what else the DSN says (sslmode, ...) goes to psycopg.connect as it is
        "application_name": f"connbench:{target}",
        # libpq's connect_timeout is whole seconds, at least 2.
        "connect_timeout": max(2, round(settings.connect_timeout)),
    }
    for key in ("dbname", "user", "password", "host", "port"):
        options.pop(key, None)
    options.update(libpq_tcp(settings.tcp_keepalive, settings.tcp_user_timeout))
    if not chosen.pop("pgbouncer", False):
        # The statement's share of request_timeout (PgBouncer refuses the `options` startup parameter).
        timeout = f"-c statement_timeout={round(settings.request_timeout * 1000)}"
        options["options"] = f"{options.get('options', '')} {timeout}".strip()
    if chosen.pop("pool", False):
        options["pool"] = {
            "min_size": min(settings.pool_min, settings.pool_max),
            "max_size": settings.pool_max,
            "timeout": settings.pool_timeout,
        }
        if settings.idle_timeout > 0:
            # psycopg_pool closes connections idle that long, but only those above min_size.
            options["pool"]["max_idle"] = settings.idle_timeout
        if settings.pool_check:  # psycopg_pool checks a connection before handing it out
            options["pool"]["check"] = ConnectionPool.check_connection
    elif chosen.get("CONN_MAX_AGE") and settings.idle_timeout > 0:
        # Django has only an age limit: a connection that old is closed when a request starts or ends.
        chosen["CONN_MAX_AGE"] = settings.idle_timeout
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname", ""),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
        "OPTIONS": options,
        **chosen,
    }


DATABASES = {"default": database(os.environ.get("CONNBENCH_DSN") or DEFAULT_DSN, TARGET, CONNBENCH)}

# Nothing is signed (no sessions, no messages, no CSRF); Django wants a key all the same.
SECRET_KEY = "connbench-django-target-signs-nothing"
DEBUG = False
ALLOWED_HOSTS = ["*"]  # 127.0.0.1 under `connbench serve`, the service's name under docker compose
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "targets.django.views"
USE_TZ = True
