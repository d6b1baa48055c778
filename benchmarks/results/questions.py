"""The report's opening: each question of the suite and each claim of the seed documents, answered from a run.

A registry, as ann-benchmarks keeps its metrics: question → the findings module that answers it (one short
sentence with its key number, and the answer in detail, from the metrics layer) → the report section whose
figure shows it. An answer
whose cells the run lacks says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from benchmarks.results.findings import (
    capacity,
    cost,
    frameworks,
    hyperdrive,
    lazy_eager,
    leaks,
    pool_size,
    pooler,
    shared_client,
    shutdown,
    silent_drop,
)
from benchmarks.results.findings.common import Answer
from benchmarks.results.load import RunData
from benchmarks.results.metrics import travels


@dataclass(frozen=True)
class Question:
    ask: str
    section: str  # the report section whose figure shows the answer
    answer: Callable[[RunData], Answer | None]


TIME_SPLIT = "Where a request's time goes (getting a connection, the query, the rest)"
ERRORS = "Errors (when a shared client breaks)"
FAULTS = "Faults: cold start, restarts, the connection cap, idle, dropped and killed connections, shutdown, freezing"
PATH = "The connection path: distance, TLS and where the pooler sits"
CONNECTIONS = "Connections PostgreSQL sees"
POOL_SIZE = "How big should the pool be"
OPEN_MODEL = "Requests that arrive at a rate (open model)"
FAMILIES = "The framework families: SQLAlchemy, Django, node-postgres and postgres.js"

QUESTIONS = [
    Question("What does a connection cost?", TIME_SPLIT, cost.answer),
    Question("When does a shared global client break?", ERRORS, shared_client.answer),
    Question("Lazy or eager connect?", FAULTS, lazy_eager.answer),
    Question("What does a client created per call and never closed do?", FAULTS, leaks.answer),
    Question("What does a pooler change, and where should it sit?", PATH, pooler.answer),
    Question("What happens on shutdown?", FAULTS, shutdown.answer),
    Question("How big should the pool be?", POOL_SIZE, pool_size.answer),
    Question("How many requests per second does each strategy serve within the SLO?", OPEN_MODEL, capacity.answer),
    Question("Does a pooler next to the Worker give Hyperdrive's saving?", PATH, hyperdrive.answer),
    Question("SQLAlchemy behind PgBouncer: NullPool or QueuePool?", FAMILIES, frameworks.sqlalchemy),
    Question("What does pool_pre_ping cost?", FAMILIES, frameworks.pre_ping),
    Question("Django: CONN_MAX_AGE=0, persistent connections or the 5.1 pool?", FAMILIES, frameworks.django),
    Question("node-postgres Pool, a client per request, or postgres.js?", FAMILIES, frameworks.node),
    # A new question goes last: its place is its id (answer-N) in the report, summary.json and compare.
    Question("Which settings survive a connection that dies silently?", FAULTS, silent_drop.answer),
]

CLAIMS = [
    Question(
        "Worker demo: a Prisma client kept in a module-level variable fails every second request; "
        "a client per request fixes it",
        ERRORS,
        shared_client.claim_worker,
    ),
    Question("Prisma: an explicit $connect() makes the first request fast", FAULTS, lazy_eager.claim_connect),
    Question(
        "Prisma: a new PrismaClient per call without $disconnect() opens a new pool each time",
        FAULTS,
        leaks.claim_leak,
    ),
    Question("Prisma: one PrismaClient per long-running app", CONNECTIONS, shared_client.claim_one_client),
    Question("Prisma: exit hooks still reach the database on shutdown", FAULTS, shutdown.claim_exit_hook),
]


def anchor(section: str) -> str:
    """The id nbconvert gives a markdown heading."""
    return "#" + section.replace(" ", "-")


NOT_MEASURED = "*Not measured in this run* (its cells are missing or invalid)."


def answers(run: RunData, registry: list[Question], prefix: str = "answer") -> pd.DataFrame:
    """One row per question: the question, its short answer (one sentence with its key number, or why there is
    none), the answer in detail, the id of the detail's place in the report (`<prefix>-<n>`), the link to the
    figure that shows it, and whether its key number carries to another machine (None without one)."""
    rows = []
    for i, q in enumerate(registry, 1):
        got = q.answer(run)
        short, detail = (got.short, got.detail) if got else (NOT_MEASURED, NOT_MEASURED)
        carries = travels(got.key.metric) if got and got.key else None
        rows.append({"question": q.ask, "answer": short, "detail": detail, "id": f"{prefix}-{i}",
                     "figure": anchor(q.section), "travels": carries})  # fmt: skip
    return pd.DataFrame(rows)
