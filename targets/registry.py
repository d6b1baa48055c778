"""The one registry of targets: every family's targets (targets/*/family.toml), read once at start.

A `Registry` is an immutable mapping of target id to `Target`, in order: the python family first, then the
other families in folder order, then the user's own services. `BUILT_IN` holds the families' targets and is
never changed; a run with services of the user's (`--target-file`, `--url`: targets/yours.py) builds its own
registry with them, `build_registry(user_targets)`, and a process it starts builds the same one from the
JSON of those targets (`targets.yours.registry_from_json`).

`TARGETS` and `get_target` read the registry this process runs with: `BUILT_IN` unless it chose another
with `use(registry)` once it knew the user's targets. They are for code that is not yet handed its run's
registry; code that is, reads that registry.

Adding a family means adding its folder with its family.toml (see targets/families.py for its keys):
- its targets, `[strategies.<name>]` (ids `<family>-<name>`) or `targets = "module:function"`;
- how to build it (`[build]`) and serve one target (`[serve] command` or `app`), speaking the HTTP contract
  of targets/contract.py (Node families import targets/node-shared/contract.ts);
- `[docker] stage`: the stage of targets/Dockerfile that runs it (`python` or `node`; a new runtime adds
  its stage there, and an npm family's lockfiles are picked up by the Dockerfile without naming it);
- the scenarios that should run its targets name them, their strategy or the family in their `targets`
  lists (benchmarks/scenarios/*.toml; `*` already takes in every target).
docker-compose.yml is then regenerated (`python -m benchmarks.stack.compose > docker-compose.yml`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

from targets.families import FAMILIES
from targets.target import Target

__all__ = [
    "BUILT_IN",
    "TARGETS",
    "Registry",
    "Target",
    "UnknownTarget",
    "build_registry",
    "current",
    "get_target",
    "use",
]


class UnknownTarget(ValueError):
    def __init__(self, name: str, known: Sequence[str] = ()) -> None:
        super().__init__(f"unknown target {name!r}; valid targets: {', '.join(known)}")


class Registry(Mapping[str, Target]):
    """Targets by id, in registry order; immutable (a registry with more targets is a new registry)."""

    def __init__(self, targets: Sequence[Target]) -> None:
        by_id: dict[str, Target] = {}
        for t in targets:
            if t.id in by_id:
                raise ValueError(f"two targets are named {t.id!r} ({by_id[t.id].family} and {t.family})")
            by_id[t.id] = t
        self._targets = MappingProxyType(by_id)

    def __getitem__(self, target_id: str) -> Target:
        return self._targets[target_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __repr__(self) -> str:
        return f"Registry({', '.join(self._targets)})"

    def get_target(self, target_id: str) -> Target:
        """The target `target_id`; UnknownTarget (one line, listing the valid ids) for any other."""
        try:
            return self._targets[target_id]
        except KeyError:
            raise UnknownTarget(target_id, list(self._targets)) from None

    @property
    def families(self) -> tuple[str, ...]:
        """The families of its targets, in registry order."""
        return tuple(dict.fromkeys(t.family for t in self._targets.values()))

    def joined(self, targets: Sequence[Target]) -> Registry:
        """A new registry: these targets after this one's (ValueError when an id is taken)."""
        return Registry([*self._targets.values(), *targets])


BUILT_IN = Registry([t for family in FAMILIES.values() for t in family.targets])


def build_registry(user_targets: Sequence[Target] = ()) -> Registry:
    """The registry of a run: the families' targets, then the user's own services."""
    return BUILT_IN.joined(user_targets) if user_targets else BUILT_IN


# -- the registry this process runs with ----------------------------------------------------------------
_current: Registry = BUILT_IN


def use(registry: Registry) -> None:
    """Run this process with `registry` (built with the run's user targets) instead of BUILT_IN."""
    global _current
    _current = registry


def current() -> Registry:
    """The registry this process runs with (BUILT_IN until `use`)."""
    return _current


class _Current(Mapping[str, Target]):
    """A read-only view of the registry this process runs with."""

    def __getitem__(self, target_id: str) -> Target:
        return _current[target_id]

    def __iter__(self) -> Iterator[str]:
        return iter(_current)

    def __len__(self) -> int:
        return len(_current)


TARGETS: Mapping[str, Target] = _Current()


def get_target(target_id: str) -> Target:
    """`current().get_target(target_id)`."""
    return _current.get_target(target_id)
