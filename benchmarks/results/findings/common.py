"""What every findings module shares: the type of an answer and the error classes of a cell group."""

from __future__ import annotations

from benchmarks.results.load import RunData
from benchmarks.results.stats import merge_errors

# A question's answer: (one sentence computed from the run, its key number), or None when the run lacks its cells.
Answer = tuple[str, str] | None


def errors_of(run: RunData, scenario: str, target: str) -> dict[str, int]:
    """The error classes of every cell of `target` in `scenario` (valid or not), most frequent first."""
    return merge_errors(run.cells(scenario, target)["errors"])


def capitalised(parts: list[str]) -> str:
    """Parts joined by '; ' as one sentence: its first letter upper-case, a full stop at the end."""
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."
