"""README.md and docs/*.md stay true to the code: every `connbench` command they show parses with the real CLI,
every relative link resolves, every strategy, target setting and results column is documented, the README stays
short and links every page. Pure logic: nothing is started."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
from helpers import REPO

import benchmarks.results.summary as S
from benchmarks.cli import build_parser
from targets.contract import SETTINGS
from targets.python.strategies import STRATEGIES

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
TOPICS = [
    "scenarios.md",
    "connection-path.md",
    "your-service.md",
    "targets.md",
    "docker.md",
    "results.md",
    "faults.md",
    "findings.md",
    "harness.md",
]
MAX_README_LINES = 250


def rel(page: Path) -> str:
    return str(page.relative_to(REPO))


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell (backticks removed)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def code_blocks(text: str, lang: str = "sh") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """The `connbench` command lines of a shell block as argument lists (without `connbench`).

    Continued lines are joined, comments dropped, `VAR=value` prefixes and a trailing `&` ignored;
    `docker compose run --rm bench ARGS` is `connbench run ARGS` inside the container."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words.pop(0)
        if words and words[-1] == "&":
            words.pop()
        if words[:1] == ["connbench"] or words[:1] == [".venv/bin/connbench"]:
            found.append(words[1:])
        elif words[:5] == ["docker", "compose", "run", "--rm", "bench"]:
            found.append(["run", *words[5:]])
    return found


SHOWN = [(rel(page), argv) for page in PAGES for block in code_blocks(page.read_text()) for argv in commands(block)]


def test_the_pages_show_many_commands() -> None:
    # the parsing below is only worth something when it finds the commands
    assert len(SHOWN) >= 30, len(SHOWN)
    assert {argv[0] for _, argv in SHOWN} >= {"run", "db", "serve", "up", "verify", "baseline", "report"}


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[name]


@pytest.mark.parametrize(("page", "argv"), SHOWN, ids=[f"{p}: {' '.join(a)}" for p, a in SHOWN])
def test_every_command_shown_parses(page: str, argv: list[str]) -> None:
    parser = build_parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{page}: `connbench {' '.join(argv)}` does not parse (exit {exc.code}): {err.getvalue()}")
    # argparse also takes an abbreviated option: the pages spell each one out
    options = subcommand(parser, argv[0])._option_string_actions
    for word in argv[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{page}: `connbench {argv[0]}` has no option {word} (abbreviated?)"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def prose(text: str) -> str:
    """The text without code blocks and code spans (a span may run over a line break)."""
    return re.sub(r"`[^`]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))


LINKS = [
    (page, target)
    for page in PAGES
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text()))
    if not re.match(r"[a-z]+:", target)
]


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{rel(p)} -> {t}" for p, t in LINKS])
def test_every_relative_link_resolves(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{rel(page)} links to {target}, which does not exist"
    assert REPO in dest.parents or dest == REPO, f"{rel(page)} links outside the repository: {target}"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{rel(page)} links to {target}: no such heading"


def test_readme_is_short_and_links_every_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES, f"README.md has {len(text.splitlines())} lines"
    for page in DOCS.glob("*.md"):
        assert f"](docs/{page.name})" in text, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize("name", TOPICS)
def test_every_topic_has_its_page(name: str) -> None:
    page = DOCS / name
    assert page.exists(), f"docs/{name} is missing"
    assert page.read_text().startswith("# "), f"docs/{name} does not start with its title"


ROWS = {key: cells for page in PAGES for key, cells in table_rows(page.read_text()).items()}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_is_in_the_targets_table(name: str) -> None:
    assert name in ROWS, f"strategy {name!r} has no row in a table of README.md or docs/"


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_setting_is_documented_with_its_default(name: str) -> None:
    setting = SETTINGS[name]
    assert setting.env in ROWS, f"{setting.env} has no row in the settings table"
    default = ROWS[setting.env][0]
    assert float(default) == float(setting.default), f"{setting.env}: the docs say {default}, code {setting.default}"


COLUMNS = S.SUMMARY_COLUMNS + S.TIMESERIES_COLUMNS + S.CAPACITY_COLUMNS + S.OPEN_COLUMNS


@pytest.mark.parametrize("column", sorted(set(COLUMNS)))
def test_every_results_column_is_documented(column: str) -> None:
    assert f"`{column}`" in (DOCS / "results.md").read_text(), f"docs/results.md does not document `{column}`"


def test_ci_runs_the_readme_test_command() -> None:
    blocks = code_blocks(README.read_text())
    assert any(line.split("#")[0].strip() == "make test" for block in blocks for line in block.splitlines())
    # `make test` is .ci/run, which CI runs, and .ci/run ends in the tests themselves
    assert re.search(r"^test:\n\tbash \.ci/run$", (REPO / "Makefile").read_text(), re.M)
    ci = (REPO / ".ci" / "run").read_text()
    lanes = re.findall(r"^\s*(?:\S*/)?pytest -q(.*)$", ci, re.M)
    # every test, once (options that select no test, such as --durations, aside)
    selected = [" ".join(w for w in lane.split("#")[0].split() if not w.startswith("--durations")) for lane in lanes]
    assert selected == ["tests/unit", "--ignore=tests/unit"], lanes
