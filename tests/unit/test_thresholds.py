"""Thresholds on a run (`connbench run --threshold`): parsing, the check per valid cell, what the manifest
keeps, the report's sentence and the exit code, on the committed real runs of tests/data/compare (their
README says how they were made). Pure logic: nothing is started."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.cli.run import BREACH_EXIT, _threshold_exit
from benchmarks.errors import ConnbenchError
from benchmarks.results.findings import thresholds as finding
from benchmarks.results.load import load_run, read_summary
from benchmarks.run import thresholds as T
from benchmarks.run.options import RunOptions

DATA = Path(__file__).resolve().parents[1] / "data" / "compare"
BASE, POOL1 = DATA / "base", DATA / "pool1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latency_p99_ms<50", T.Threshold("latency_p99_ms", "<", 50)),
        (" error_rate <= 0.01 ", T.Threshold("error_rate", "<=", 0.01)),
        ("rps>1e3", T.Threshold("rps", ">", 1000)),
        ("served_rps>=-1", T.Threshold("served_rps", ">=", -1)),
    ],
)
def test_a_threshold_parses_and_prints_as_given(text: str, expected: T.Threshold) -> None:
    assert T.parse_threshold(text) == expected
    assert T.parse_threshold(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latency_p99_ms", "is not METRIC<NUMBER"),
        ("latency_p99_ms<<50", "is not METRIC<NUMBER"),
        ("latency_p99_ms<50ms", "is not METRIC<NUMBER"),
        ("latency_p99_ms=50", "is not METRIC<NUMBER"),
        ("p99<50", "unknown metric 'p99'"),
    ],
)
def test_a_malformed_threshold_is_one_line(text: str, message: str) -> None:
    with pytest.raises(ConnbenchError, match=message):
        T.parse_threshold(text)


def test_a_malformed_threshold_stops_the_run_before_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.run.runner as runner

    monkeypatch.setattr(runner, "run_matrix", lambda options: pytest.fail("the run started"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(["run", "--threshold", "error_rate<0.01", "--threshold", "p99<50"])
    assert exc.value.code == 2
    assert err.getvalue().count("\n") == 1 and "--threshold" in err.getvalue() and "p99" in err.getvalue()


def test_each_valid_cell_is_checked() -> None:
    summary = read_summary(POOL1)
    rps = summary.loc[summary["valid"], "rps"]
    top = float(rps.max())
    held, breached = T.check([T.Threshold("rps", "<=", top), T.Threshold("rps", "<", top)], summary)
    assert held["cells_checked"] == breached["cells_checked"] == int(summary["valid"].sum()) == 3
    assert held["breaches"] == []
    (cell,) = breached["breaches"]  # only the fastest repeat reaches the top
    assert cell["value"] == top and cell["cell_id"] in set(summary["cell_id"])
    (unmeasured,) = T.check([T.Threshold("first_request_ms", "<", 1)], summary)  # no cold-start cell
    assert unmeasured["cells_checked"] == 0 and not unmeasured["breaches"]
    assert T.unchecked_lines([unmeasured]) == ["threshold first_request_ms<1: no valid cell measured first_request_ms"]


def test_the_manifest_keeps_the_check_of_the_real_run() -> None:
    # the run was made with --threshold; checking its files again gives what it wrote
    manifest = json.loads((POOL1 / "manifest.json").read_text())
    given = manifest["options"]["thresholds"]
    assert given == ["latency_p99_ms<10", "error_rate<0.01"]
    assert T.check_run(POOL1, given) == manifest["thresholds"]
    assert RunOptions.from_manifest(manifest, POOL1, None).thresholds == tuple(given)


def test_a_breach_exits_99_with_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    # what the real run printed last (its p99 of each repeat over 10 ms), from its manifest
    assert _threshold_exit(POOL1) == BREACH_EXIT
    assert capsys.readouterr().err.splitlines() == [
        f"connbench: threshold latency_p99_ms<10 breached: steady.pool-eager-asyncpg.u16.r{i}: latency_p99_ms = {v} ms"
        for i, v in ((1, 20), (2, 24), (3, 22))
    ]


def test_no_breach_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(POOL1 / "manifest.json", tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["thresholds"] = T.check([T.parse_threshold("error_rate<0.01")], read_summary(POOL1))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert _threshold_exit(tmp_path) == 0 and capsys.readouterr().err == ""


def test_the_report_says_which_thresholds_held() -> None:
    said = finding.sentences(load_run(POOL1))
    assert said == [
        "Threshold latency_p99_ms<10 breached in 3 of 3 valid cells: steady.pool-eager-asyncpg.u16.r1 (20 ms), "
        "steady.pool-eager-asyncpg.u16.r2 (24 ms), steady.pool-eager-asyncpg.u16.r3 (22 ms).",
        "Threshold error_rate<0.01 held in all 3 valid cells that measured it.",
    ]


def test_a_run_without_thresholds_says_nothing(tmp_path: Path) -> None:
    for name in ("manifest.json", "summary.csv"):
        shutil.copy(BASE / name, tmp_path / name)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "thresholds"}))
    assert finding.sentences(load_run(tmp_path)) == []


def test_scenario_and_target_files_scope_their_thresholds(tmp_path: Path) -> None:
    """A scenario file's thresholds hold for its cells, a target file's for its target's; the others are left
    alone, each breach line names its scope, and a malformed one names its file."""
    from benchmarks.run.runner import scoped_thresholds
    from benchmarks.run.scenario import parse_scenario
    from targets.yours import load_target_file

    sc_file = tmp_path / "steady.toml"
    sc_file.write_text('kind = "load"\nthresholds = ["latency_p99_ms<1"]\n[profiles.smoke]\n')
    sc = parse_scenario(sc_file, "smoke")
    assert sc is not None and sc.thresholds == ("latency_p99_ms<1",)
    tf = tmp_path / "svc.toml"
    tf.write_text('name = "svc"\ncommand = "serve"\napplication_name = "svc"\nthresholds = ["rps>1e9"]\n')
    svc = load_target_file(tf)
    scoped = scoped_thresholds([sc], RunOptions(user_targets=(svc,)))
    assert [(t, str(s)) for t, s in scoped] == [("latency_p99_ms<1", "scenario steady"), ("rps>1e9", "target svc")]

    summary = read_summary(POOL1)
    (p99, rps) = T.check([T.parse_threshold(t) for t, _ in scoped], summary, [s for _, s in scoped])
    assert p99["scope"] == "scenario steady" and p99["cells_checked"] == len(p99["breaches"]) > 0
    assert rps["cells_checked"] == 0  # no cell of a target named svc
    assert T.breach_lines([p99])[0].startswith("threshold latency_p99_ms<1 (scenario steady) breached: steady.")

    sc_file.write_text('kind = "load"\nthresholds = ["p99<1"]\n[profiles.smoke]\n')
    with pytest.raises(ConnbenchError, match=f"^{sc_file}: threshold 'p99<1': unknown metric 'p99'"):
        parse_scenario(sc_file, "smoke")
    with pytest.raises(ConnbenchError, match=f"^{tf}: threshold 'x' is not METRIC<NUMBER"):
        T.parse_list(str(tf), ["x"])
