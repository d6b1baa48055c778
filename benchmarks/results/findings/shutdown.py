"""What happens on shutdown? On SIGTERM the exit hook runs and the connections are released; on SIGKILL the
requests in flight fail. And the seed's claim that Prisma's exit hooks still reach the database."""

from __future__ import annotations

from benchmarks.results.findings.common import Answer, capitalised
from benchmarks.results.load import RunData
from benchmarks.results.metrics import estimate

TERM, KILL = "shutdown", "shutdown-kill"
GRACEFUL = ["pool-eager-asyncpg", "prisma-global"]
KILLED = "pool-eager-asyncpg"


def answer(run: RunData) -> Answer:
    out, key = [], None
    for t in GRACEFUL:
        logged, release = estimate(run, "shutdown_logged", TERM, t), estimate(run, "release_s", TERM, t)
        lost = estimate(run, "errors_after_action", TERM, t)
        if logged is not None:
            out.append(
                f"on SIGTERM {t} {'runs' if logged.value else 'does not run'} its exit hook"
                + (f", releases its connections in {release.text('s')}" if release else "")
                + (f" and loses {lost.text()} requests" if lost else "")
            )
            if release and not key:
                key = f"release {release.text('s')}"
    kill = estimate(run, "errors_after_action", KILL, KILLED)
    if kill is not None:
        out.append(f"on SIGKILL no hook runs and {kill.text()} requests in flight fail")
    if not out:
        return None
    return capitalised(out), key or ""


def claim_exit_hook(run: RunData) -> Answer:
    """Prisma: exit hooks still reach the database on shutdown."""
    logged = estimate(run, "shutdown_logged", TERM, "prisma-global")
    if logged is None:
        return None
    return (
        f"On SIGTERM prisma-global's exit hook {'reached' if logged.value else 'did not reach'} the database "
        "(Prisma 7 has no beforeExit hook: process.on('SIGTERM') does it).",
        "row written" if logged.value else "no row",
    )
