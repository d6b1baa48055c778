"""A target of the registry: one service connbench measures, whichever family it belongs to.

Its own module, with no other of connbench's imports, so that a family's code (targets/python/strategies.py)
can make its targets while targets/families.py reads that family's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """One target of the registry (targets/registry.py). A manifest family's strategy is its target id."""

    id: str
    strategy: str
    driver: str
    summary: str = field(compare=False)
    via_pgbouncer: bool = field(compare=False)
    session_per_request: bool = field(compare=False)  # opens a PostgreSQL session per request
    family: str = field(compare=False)

    @property
    def conn_key(self) -> str:
        """Under which name the sampler counts this target's PostgreSQL connections (its application_name;
        a user's service may be recognised by its role instead, targets/yours.py)."""
        return f"connbench:{self.id}"

    @property
    def ready_path(self) -> str:
        """The path that answers 200 once the target is ready."""
        return "/ready"
