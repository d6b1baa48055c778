"""README.md documents what the code defines: every strategy, every target setting and its default."""

from __future__ import annotations

import re

import pytest
from helpers import REPO

from targets.strategies import SETTINGS, STRATEGIES

README = (REPO / "README.md").read_text()


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell (backticks removed)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


ROWS = table_rows(README)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_is_in_the_targets_table(name: str) -> None:
    assert name in ROWS, f"strategy {name!r} has no row in README's targets table"


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_setting_is_documented_with_its_default(name: str) -> None:
    setting = SETTINGS[name]
    assert setting.env in ROWS, f"{setting.env} has no row in README's settings table"
    default = ROWS[setting.env][0]
    assert float(default) == float(setting.default), f"{setting.env}: README says {default}, code {setting.default}"


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert any(line.strip() == "make test" for block in commands for line in block.splitlines())
    # `make test` is .ci/run, which CI runs, and .ci/run ends in the tests themselves
    assert re.search(r"^test:\n\tbash \.ci/run$", (REPO / "Makefile").read_text(), re.M)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\s*(\S*/)?pytest -q\s*$", ci, re.M), ".ci/run does not run `pytest -q`"
