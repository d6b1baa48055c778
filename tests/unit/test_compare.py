"""`connbench compare`, summary.json and the CI recipe, on three small committed run folders made by real runs
(tests/data/compare/README.md says how): `base`, a same-settings `rerun`, and `pool1`, the same target with a
pool of one connection. Pure logic: nothing is started."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers import connbench_here

from benchmarks.cli import build_parser
from benchmarks.cli.run import BREACH_EXIT, run_options
from benchmarks.errors import ConnbenchError
from benchmarks.results import compare as C
from benchmarks.results import summary_json
from benchmarks.results.load import load_run
from benchmarks.results.questions import CLAIMS, QUESTIONS

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "compare"
BASE, RERUN, POOL1 = DATA / "base", DATA / "rerun", DATA / "pool1"
CELL = "steady.pool-eager-asyncpg.u16"  # the cell all three runs have


cli = connbench_here


def rows(c: C.Comparison, metric: str) -> list[dict]:
    return [r for r in c.rows if r["metric"] == metric]


# -- summary.json ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema() -> dict:
    s = json.loads(summary_json.SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(s)
    return s


@pytest.mark.parametrize("folder", [BASE, RERUN, POOL1], ids=lambda p: p.name)
def test_summary_json_of_a_real_run_meets_its_schema(folder: Path, schema: dict) -> None:
    data = json.loads((folder / "summary.json").read_text())
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    assert (data["schema"], data["version"]) == (summary_json.SCHEMA, summary_json.VERSION)
    # every cell of summary.csv is in it, its repeats together, each metric the median of its values
    ids = {c["id"]: c for c in data["cells"]}
    assert CELL in ids and ids[CELL]["repeats"] == [f"{CELL}.r{i}" for i in (1, 2, 3)]
    rps = ids[CELL]["metrics"]["rps"]
    assert rps["n"] == 3 and sorted(rps["values"])[1] == rps["value"] and rps["lo"] <= rps["value"] <= rps["hi"]


def test_summary_json_is_what_the_folder_files_give(schema: dict) -> None:
    # the committed file is the writer's output for the committed summary.csv and manifest (nothing edited)
    assert summary_json.build(load_run(POOL1)) == json.loads((POOL1 / "summary.json").read_text())


def test_the_schema_rejects_a_summary_without_its_version(schema: dict) -> None:
    data = json.loads((BASE / "summary.json").read_text())
    del data["version"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


def test_an_answer_key_has_its_metric_unit_and_interval() -> None:
    data = json.loads((BASE / "summary.json").read_text())
    answers = {a["id"]: a for a in data["answers"]}
    assert len(answers) == len(QUESTIONS) + len(CLAIMS)  # answered or not
    # a steady run of one target answers no question: each says so with a null answer and key
    assert all(a["answer"] is None and a["key"] is None for a in answers.values())


def test_a_summary_json_of_another_version_is_one_line(tmp_path: Path) -> None:
    data = json.loads((BASE / "summary.json").read_text())
    (tmp_path / "summary.json").write_text(json.dumps({**data, "version": 2}))
    with pytest.raises(ConnbenchError, match="summary version 2; this connbench reads version 1"):
        summary_json.read(tmp_path)


# -- compare ---------------------------------------------------------------------------------------------
def test_the_regression_is_beyond_noise_and_worse() -> None:
    c = C.compare(BASE, POOL1)
    (p99,) = [r for r in rows(c, "latency_p99_ms") if r["cell"] == CELL]
    assert p99["verdict"] == C.BEYOND and p99["direction"] == "worse" and p99["repeats"] == [3, 3]
    assert p99["ratio"] > 1 + C.MIN_CHANGE and p99["interval"][0] > 0  # the whole interval above 0
    (peak,) = rows(c, "conn_peak")  # one connection instead of ten: fewer, which the registry calls better
    assert (peak["old"], peak["new"], peak["verdict"], peak["direction"]) == (10, 1, C.BEYOND, "better")


def test_the_rerun_is_within_noise() -> None:
    c = C.compare(BASE, RERUN)
    assert c.rows and all(r["verdict"] == C.WITHIN for r in c.rows), [r for r in c.rows if r["verdict"] != C.WITHIN]
    # its throughput moved by more than 10 %, but so did the repeats of each run: not a regression
    (rps,) = rows(c, "rps")
    assert rps["change_pct"] < -10 and rps["interval"][0] < 0 < rps["interval"][1]


def test_different_settings_are_said_at_the_top_and_same_ones_are_not() -> None:
    (line,) = [d for d in C.compare(BASE, POOL1).differences if d.startswith("different settings")]
    assert "target_settings.pool_max 10 vs 1" in line
    assert not [d for d in C.compare(BASE, RERUN).differences if d.startswith("different settings")]


def test_a_run_of_another_machine_is_said_at_the_top() -> None:
    # the committed reference run (results/reference) ran on another CPU; its manifest as summary.json's "run"
    reference = json.loads((REPO / "results" / "reference" / "manifest.json").read_text())
    other = {"run": {k: reference.get(k) for k in summary_json.RUN_KEYS}}
    base = json.loads((BASE / "summary.json").read_text())
    said = C.differences(base, other)
    cpus = (base["run"]["machine"]["cpu_model"], reference["machine"]["cpu_model"])  # Intel and AMD when written
    machines = [d for d in said if d.startswith("different machines: ")]
    assert machines == ([] if cpus[0] == cpus[1] else [machines[0]])
    assert cpus[0] == cpus[1] or f"cpu_model {cpus[0]!r} vs {cpus[1]!r}" in machines[0]
    # settings, not where the scenario files lay, nor an empty list where the older run had no key
    settings = [d for d in said if d.startswith("different settings")]
    assert not [d for d in settings if ".path " in d or "thresholds None vs []" in d], settings


def test_cells_of_one_run_only_are_listed() -> None:
    c = C.compare(BASE, RERUN)  # the rerun also measured pool-lazy-asyncpg
    assert c.only_new == ["steady.pool-lazy-asyncpg.u16"] and c.only_old == []
    assert {r["cell"] for r in c.rows} == {CELL}
    assert C.compare(RERUN, BASE).only_old == ["steady.pool-lazy-asyncpg.u16"]


def test_one_repeat_cannot_judge_noise() -> None:
    assert C.verdict([100.0], [50.0, 51.0]) == (C.UNKNOWN, None)
    said, interval = C.verdict([100.0, 101.0, 99.0], [50.0, 51.0, 49.0])
    assert said == C.BEYOND and interval is not None and interval[1] < 0
    assert C.verdict([100.0, 101.0, 99.0], [95.0, 96.0, 94.0])[0] == C.WITHIN  # apart, but under 10 %


@pytest.mark.parametrize(
    ("text", "limit"),
    [("rps<-10%", C.Limit("rps", "<", -10)), ("latency_p99_ms > +20 %", C.Limit("latency_p99_ms", ">", 20))],
)
def test_a_fail_on_limit_parses(text: str, limit: C.Limit) -> None:
    assert C.parse_limit(text) == limit


@pytest.mark.parametrize("text", ["rps<10%", "rps<-10", "rps-10%", "p99>+20%", "rps<<-1%", ""])
def test_a_malformed_fail_on_is_one_line_and_exit_2_before_anything(text: str) -> None:
    code, out, err = cli("compare", "/no/such/old", "/no/such/new", "--fail-on", text)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "--fail-on" in err


def test_fail_on_exits_99_naming_each_breach() -> None:
    limits = ["latency_p99_ms>+20%", "latency_p50_ms>=-100%", "rps<-10%", "latency_p99_ms>+1000%"]
    code, out, err = cli("compare", str(BASE), str(POOL1), *(w for lim in limits for w in ("--fail-on", lim)))
    assert code == BREACH_EXIT and "cells" in out  # the table first, on stdout
    # p99 beyond noise, past +20%; p50 past -100% but within noise; rps down 12 % but within noise
    assert err.splitlines() == [
        f"connbench: fail-on latency_p99_ms>+20% breached: {CELL}: latency_p99_ms 12 ms -> 22 ms (+83.3%, beyond "
        "noise, worse)"
    ]


def test_fail_on_passes_a_rerun() -> None:
    assert cli("compare", str(BASE), str(RERUN), "--fail-on", "rps<-10%", "--fail-on", "latency_p99_ms>+20%")[0] == 0


def test_markdown_and_json() -> None:
    code, md, _ = cli("compare", str(BASE), str(POOL1), "--markdown")
    assert code == 0 and md.startswith("## connbench compare")
    assert re.search(rf"^\| {re.escape(CELL)} \| latency_p99_ms \| .* \| \*\*beyond noise, worse\*\* \|$", md, re.M)
    assert "- different settings: " in md
    code, text, _ = cli("compare", str(BASE), str(RERUN), "--json")
    data = json.loads(text)
    assert code == 0 and data["only_in_new"] == ["steady.pool-lazy-asyncpg.u16"]
    assert {r["verdict"] for r in data["cells"]} == {C.WITHIN} and data["noise"].startswith("bootstrap over repeats")


def test_not_a_run_folder_is_one_line(tmp_path: Path) -> None:
    code, _, err = cli("compare", str(tmp_path / "nothing"), str(BASE))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no such run folder" in err


# -- the CI recipe (docs/ci.md) --------------------------------------------------------------------------
def workflow() -> dict:
    text = (REPO / "docs" / "ci.md").read_text()
    (block,) = re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)
    return yaml.safe_load(block)


def workflow_commands() -> list[list[str]]:
    """The `connbench` command lines of the workflow's steps, without their output redirection."""
    found = []
    for job in workflow()["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                words = shlex.split(line.split(">>")[0])
                if words[:1] == ["connbench"]:
                    found.append(words[1:])
    return found


def test_the_workflow_starts_a_database_runs_with_thresholds_compares_and_keeps_mains_run() -> None:
    (job,) = workflow()["jobs"].values()
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert [argv[0] for argv in workflow_commands()] == ["run", "compare"]
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "run/"
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") and "compare" in s.get("run", "") for s in job["steps"])


def test_the_workflows_run_command_parses_with_its_thresholds() -> None:
    (argv,) = [a for a in workflow_commands() if a[0] == "run"]
    example = str(REPO / "benchmarks" / "examples" / "my-service.toml")  # the user's file, as docs/ci.md says
    options = run_options(build_parser().parse_args([example if a == "bench/my-service.toml" else a for a in argv]))
    assert options.thresholds == ("latency_p99_ms<50", "error_rate<0.01") and options.dsn == "$DSN"
    assert [t.id for t in options.user_targets] == ["my-service"] and options.scenarios == ("steady",)


def test_the_workflows_compare_command_runs_on_committed_runs() -> None:
    (argv,) = [a for a in workflow_commands() if a[0] == "compare"]
    assert argv[1:3] == ["main-run", "run"]
    code, md, err = cli(*[{"main-run": str(BASE), "run": str(POOL1)}.get(a, a) for a in argv])
    assert code == BREACH_EXIT and "**fail-on** `rps<-10%`, `latency_p99_ms>+20%`" in md
    assert err.splitlines()[0].startswith(f"connbench: fail-on latency_p99_ms>+20% breached: {CELL}")
    code, md, err = cli(*[{"main-run": str(BASE), "run": str(RERUN)}.get(a, a) for a in argv])
    assert code == 0 and "no breach" in md and err == ""


def test_an_answers_key_number_is_beyond_noise_only_when_apart_and_big_enough() -> None:
    def side(value: float, lo: float, hi: float) -> dict:
        key = {"metric": "error_rate", "unit": "", "scenario": "steady", "target": "global-asyncpg", "at": None,
               "value": value, "lo": lo, "hi": hi}  # fmt: skip
        return {"answers": [{"id": "answer-2", "question": "q", "key": key}]}

    # intervals apart, but a 2 % change: within noise, as a cell's would be under the 10 % floor
    (small,) = C._answers(side(0.77, 0.77, 0.78), side(0.79, 0.79, 0.79))
    assert small["verdict"] == C.WITHIN
    (big,) = C._answers(side(0.50, 0.49, 0.51), side(0.79, 0.79, 0.79))
    assert big["verdict"] == C.BEYOND
    (overlapping,) = C._answers(side(0.50, 0.40, 0.80), side(0.79, 0.70, 0.90))
    assert overlapping["verdict"] == C.WITHIN
