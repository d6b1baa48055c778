"""What happens on shutdown? On SIGTERM the exit hook runs and the connections are released; on SIGKILL the
requests in flight fail. And the seed's claim that Prisma's exit hooks still reach the database."""

from __future__ import annotations

from benchmarks.results import fmt
from benchmarks.results.findings.common import Answer, KeyNumber, capitalised, key_number
from benchmarks.results.load import RunData
from benchmarks.results.metrics import estimate

TERM, KILL = "shutdown", "shutdown-kill"
GRACEFUL = ["pool-eager-asyncpg", "prisma-global"]
KILLED = "pool-eager-asyncpg"


def answer(run: RunData) -> Answer | None:
    out: list[str] = []
    said: list[str] = []
    key: KeyNumber | None = None
    for t in GRACEFUL:
        logged, release = estimate(run, "shutdown_logged", TERM, t), estimate(run, "release_s", TERM, t)
        lost = estimate(run, "errors_after_action", TERM, t)
        if logged is not None:
            out.append(
                f"on SIGTERM {t} {'runs' if logged.value else 'does not run'} its exit hook"
                + (f", releases its connections in {release.text('s')}" if release else "")
                + (f" and loses {lost.text()} requests" if lost else "")
            )
            if not said:
                key = key_number("shutdown_logged", TERM, t, logged)
                said.append(
                    f"on SIGTERM {t} {'runs' if logged.value else 'does not run'} its exit hook"
                    + (f", releases its connections in {fmt.num(release.value, 's')}" if release else "")
                    + (f" and loses {fmt.num(lost.value)} requests" if lost else "")
                )
    kill = estimate(run, "errors_after_action", KILL, KILLED)
    if kill is not None:
        out.append(f"on SIGKILL no hook runs and {kill.text()} requests in flight fail")
        said.append(f"on SIGKILL {fmt.num(kill.value)} requests in flight fail")
        key = key or key_number("errors_after_action", KILL, KILLED, kill)
    if not out:
        return None
    return Answer(capitalised(said), capitalised(out), key)


def claim_exit_hook(run: RunData) -> Answer | None:
    """Prisma: exit hooks still reach the database on shutdown."""
    logged = estimate(run, "shutdown_logged", TERM, "prisma-global")
    if logged is None:
        return None
    reached = "reached" if logged.value else "did not reach"
    release = estimate(run, "release_s", TERM, "prisma-global")
    released = f", its connections released in {fmt.num(release.value, 's')}" if release else ""
    return Answer(
        f"{'Holds' if logged.value else 'Does not hold'}: on SIGTERM prisma-global's exit hook {reached} the "
        f"database{released}.",
        f"On SIGTERM prisma-global's exit hook {'reached' if logged.value else 'did not reach'} the database "
        "(Prisma 7 has no beforeExit hook: process.on('SIGTERM') does it).",
    )
