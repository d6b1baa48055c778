"""What every findings module shares: the type of an answer and the error classes of a cell group."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.results.load import RunData
from benchmarks.results.metrics import METRICS
from benchmarks.results.stats import Estimate, merge_errors

MAX_WORDS = 35  # the answers table's sentence at most


@dataclass(frozen=True)
class KeyNumber:
    """The number an answer turns on: a metric of one target in one scenario, with its interval (summary.json)."""

    metric: str  # a name of benchmarks/results/metrics.py, or a capacity.csv column
    unit: str
    scenario: str
    target: str
    estimate: Estimate
    at: str = ""  # the variant it was read at, where the scenario sweeps one ("pool_max 4")


def key_number(metric: str, scenario: str, target: str, estimate: Estimate, at: str = "") -> KeyNumber:
    """A KeyNumber of a metric of the registry, with the registry's unit."""
    return KeyNumber(metric, METRICS[metric].unit, scenario, target, estimate, at)


@dataclass(frozen=True)
class Answer:
    """A question's answer computed from the run (a findings module returns None when the run lacks its cells)."""

    short: str  # one sentence of at most MAX_WORDS words with its key number: the answers table
    detail: str  # every number behind it: the answer in detail, one click away
    key: KeyNumber | None = None  # the key number of the short sentence, for summary.json and `connbench compare`


def errors_of(run: RunData, scenario: str, target: str) -> dict[str, int]:
    """The error classes of every cell of `target` in `scenario` (valid or not), most frequent first."""
    return merge_errors(run.cells(scenario, target)["errors"])


def capitalised(parts: list[str]) -> str:
    """Parts joined by '; ' as one sentence: its first letter upper-case, a full stop at the end."""
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."
