"""gunicorn's configuration for the django family (`--config gunicorn_conf.py` in family.toml): the gthread
worker Django is deployed with, sized from connbench's settings, and the SIGTERM exit hook.

- workers: CONNBENCH_WORKERS (`connbench serve --workers N`), processes with their own connections and pool.
- threads: THREADS per worker, each serving one request at a time with its own Django connection. 8 is
  gunicorn's rule of thumb for concurrency, 2-4 x the cores, on the 2-4 cores connbench runs on, and the
  users of the smoke profile; it stays below the default pool_max (10), as Django's documentation sizes a
  pool (no thread waits for a pooled connection unless pool_max is set lower). gunicorn's own
  GUNICORN_CMD_ARGS="--threads N" overrides it.
- graceful_timeout: shutdown_timeout. On SIGTERM the master sends SIGTERM to its workers; each stops
  accepting, finishes its in-flight requests, then runs `worker_exit` (the exit hook); the master kills a
  worker still running after graceful_timeout and exits 0.
"""

from __future__ import annotations

import math
import os
from typing import Any

from targets.contract import Settings

THREADS = 8
_settings = Settings.from_env()

worker_class = "gthread"
workers = int(os.environ.get("CONNBENCH_WORKERS") or 1)
threads = THREADS
graceful_timeout = math.ceil(_settings.shutdown_timeout)
proc_name = f"connbench:{os.environ.get('CONNBENCH_TARGET', 'django')}"
loglevel = "warning"
raw_env = ["DJANGO_SETTINGS_MODULE=targets.django.settings"]


def worker_exit(_server: Any, worker: Any) -> None:
    """gunicorn's hook after a worker stopped serving: the exit hook, in the worker itself (gunicorn also calls
    it in the master for a worker that vanished, where there is nothing to log or close)."""
    if os.getpid() != worker.pid:
        return
    from targets.django.views import exit_hook

    exit_hook()
