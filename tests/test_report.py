"""The report: a real smoke run, the notebook executed headless through `connbench report`, and the loader.

The smoke run is produced once per session by `connbench run --profile smoke` (conftest.py), the whole
profile as a user runs it. A synthetic run folder (written here, no database) covers what a smoke run lacks:
several load levels, repeats with bootstrap intervals, invalid cells and every fault scenario.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import CONNBENCH, REPO, run_connbench

from benchmarks.errors import ConnbenchError
from benchmarks.results import data as R
from benchmarks.results.summary import SCHEMA_VERSION, SUMMARY_COLUMNS, TIMESERIES_COLUMNS
from benchmarks.run.scenario import load_profile
from targets.registry import TARGETS

CORE_FIGURES = ["throughput", "latency", "connections", "sessions"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORT_TIMEOUT = 240


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_dir(smoke_run: Path) -> Path:
    return smoke_run  # the session's smoke profile run (conftest.py)


@pytest.fixture(scope="module")
def smoke_report(smoke_dir: Path) -> subprocess.CompletedProcess:
    proc = run_connbench("report", str(smoke_dir), timeout=REPORT_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def expected_figures(run: R.RunData) -> set[str]:
    """The figures whose data the run has (what the notebook must draw), from the report's contract."""
    valid = run.summary[run.summary["valid"]]
    main = valid[valid["scenario"] == R.MAIN_SCENARIO]
    names = set(CORE_FIGURES) if len(main) else set()
    if (main["error_rate"] > 0).any():
        names.add("errors")
    if len(run.baseline) and run.baseline["tps"].notna().any():
        names.add("baseline")
    if main["target"].map(R.family_of).isin(R.FRAMEWORK_FAMILIES).any():
        names.add("families")
    if main[["acquire_p50_ms", "query_p50_ms"]].notna().all(axis=1).any():
        names.add("time-split")
    if not R.distance_aggregate(run).empty:
        names.add("connection-path-latency")
    if not R.distance_aggregate(run).empty or not R.connect_round_trips(run).empty:
        names.add("connection-path-round-trips")
    if not R.pool_size_at_distance(run).empty:
        names.add("pool-size-distance")
    ts = run.timeseries[run.timeseries["cell_id"].isin(set(valid["cell_id"]))]
    for scenario, rows in valid.groupby("scenario"):
        if scenario in R.SWEPT_SCENARIOS:  # their own figure, named like the scenario, without a timeline
            names.add(f"{scenario}-timeline" if scenario in R.FAILURE_SCENARIOS else scenario)  # silent-drop's
            continue
        if scenario in (R.MAIN_SCENARIO, "spike") or scenario in R.path_scenarios(run):  # the path's figures
            continue
        if run.manifest["scenarios"].get(scenario, {}).get("kind") in ("arrival", "capacity"):
            names.add(scenario)  # the open-model figures (arrival.png, capacity.png), without a timeline
            continue
        if rows[R.FAULT_COLUMNS.get(scenario, R.GENERIC_FAULT_COLUMNS)].notna().any().any():
            names.add(scenario)
        kind = run.manifest["scenarios"].get(scenario, {}).get("kind", "load")
        if kind != "cold-start" and ts.loc[ts["scenario"] == scenario, "rps"].notna().any():
            names.add(f"{scenario}-timeline")
    return names


def check_report(run_dir: Path, stdout: str) -> set[str]:
    """Every expected figure is a non-empty PNG that the HTML names and the command printed; returns the names."""
    run = R.load_run(run_dir)
    expected = expected_figures(run)
    html_path = run_dir / "report.html"
    printed = [Path(line) for line in stdout.splitlines() if line.strip()]
    assert html_path in printed, stdout
    html = html_path.read_text()
    written = {p.stem for p in (run_dir / "figures").glob("*.png")}
    assert written == expected, f"written {sorted(written)}, expected {sorted(expected)}"
    for name in expected:
        png = run_dir / "figures" / f"{name}.png"
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, f"{png} is not a real figure"
        assert f"figures/{name}.png" in html, f"the HTML does not name {name}.png"
        assert png in printed, f"{png} not printed"
    assert html.count("data:image/png;base64") >= len(expected)
    assert run.run_id in html and str(run.manifest["machine"]["cores"]) in html
    return expected


# -- the smoke run, end to end -------------------------------------------------------------------------
def test_smoke_run_has_the_cells_the_report_needs(smoke_dir: Path) -> None:
    run = R.load_run(smoke_dir)
    main = run.summary[run.summary["scenario"] == R.MAIN_SCENARIO]
    steady = load_profile("smoke", [R.MAIN_SCENARIO])[0]
    assert set(main["target"]) == {t for t in TARGETS if steady.selects(t)} & set(run.targets)
    assert main["valid"].any(), main[["cell_id", "invalid_reason"]]
    # every scenario of the profile ran, and the run lists only the targets its cells use
    assert set(run.summary["scenario"]) == {sc.name for sc in load_profile("smoke")}
    assert set(run.targets) == set(run.summary["target"])


def test_report_executes_the_notebook_and_writes_every_figure(
    smoke_dir: Path, smoke_report: subprocess.CompletedProcess
) -> None:
    names = check_report(smoke_dir, smoke_report.stdout)
    assert set(CORE_FIGURES) <= names
    # a figure the run has no data for is skipped with one line naming it
    skipped = [ln for ln in smoke_report.stderr.splitlines() if "skipped figure" in ln]
    for line in skipped:
        name = line.split("skipped figure ", 1)[1].split(":", 1)[0]
        assert not set(name.split(", ")) & names, line


def test_findings_have_a_row_per_target(smoke_dir: Path) -> None:
    run = R.load_run(smoke_dir)
    table = R.findings(run)
    assert list(table["target"]) == run.targets
    valid_targets = set(run.summary.loc[run.summary["valid"] & (run.summary["scenario"] == "steady"), "target"])
    for row in table.itertuples():
        if row.target in valid_targets - {"worker-global"}:  # its requests hang until the request timeout
            assert row.rps > 0 and row.latency_p50_ms > 0 and row.users >= 1, row
            assert 0 <= row.error_rate <= 1 and row.conn_peak >= 1, row
    sentences = R.sentences(run)
    assert {"per-request-asyncpg", "pool-eager-asyncpg"} <= valid_targets  # the smoke profile's steady pair
    assert any(s.startswith("per-request-asyncpg p50 is") and "pool-eager-asyncpg" in s for s in sentences), sentences


# -- errors --------------------------------------------------------------------------------------------
def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0
    assert proc.stderr.startswith("connbench: error:"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


def test_report_on_a_missing_folder_fails_in_one_line(tmp_path: Path) -> None:
    proc = run_connbench("report", str(tmp_path / "nope"))
    assert_one_line_error(proc, "no such run folder")


def test_report_on_an_empty_folder_fails_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_connbench("report", str(empty))
    assert_one_line_error(proc, "empty")


def test_report_without_a_run_under_results_fails_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CONNBENCH, "report"], capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert_one_line_error(proc, "no run folder under results")


def test_report_on_an_older_schema_fails_in_one_line(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "old")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["schema_version"] = SCHEMA_VERSION - 1
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    proc = run_connbench("report", str(run_dir))
    assert_one_line_error(proc, f"schema {SCHEMA_VERSION - 1}", "run the benchmark again")


# -- the loader ----------------------------------------------------------------------------------------
def test_loader_checks_the_schema_version(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run")
    assert R.load_run(run_dir).manifest["schema_version"] == SCHEMA_VERSION
    mpath = run_dir / "manifest.json"
    manifest = json.loads(mpath.read_text())
    for version, words in ((None, "no schema_version"), (SCHEMA_VERSION - 1, "older"), (SCHEMA_VERSION + 1, "newer")):
        if version is None:
            manifest.pop("schema_version", None)
        else:
            manifest["schema_version"] = version
        mpath.write_text(json.dumps(manifest))
        with pytest.raises(ConnbenchError, match=words):
            R.load_run(run_dir)


def test_loader_rejects_folders_that_are_not_runs(tmp_path: Path) -> None:
    with pytest.raises(ConnbenchError, match="no such run folder"):
        R.load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConnbenchError, match="is empty"):
        R.load_run(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(ConnbenchError, match="no manifest.json"):
        R.load_run(tmp_path / "other")
    run_dir = write_synthetic_run(tmp_path / "run")
    (run_dir / "summary.csv").write_text(",".join(SUMMARY_COLUMNS) + "\n")
    with pytest.raises(ConnbenchError, match="no finished cell"):
        R.load_run(run_dir)
    (run_dir / "summary.csv").write_text("cell_id,target\nx,y\n")
    with pytest.raises(ConnbenchError, match="lacks the columns"):
        R.load_run(run_dir)


def test_loader_types_the_columns(tmp_path: Path) -> None:
    run = R.load_run(write_synthetic_run(tmp_path / "run"))
    s = run.summary
    assert s["valid"].dtype == bool and s["users"].dtype.kind == "i"
    assert s["rps"].dtype.kind == "f" and s["latency_p99_ms"].dtype.kind == "f"
    assert all(isinstance(e, dict) for e in s["errors"])
    assert run.timeseries["conn_total"].dtype.kind in "if"
    assert set(run.baseline["mode"]) == {"pooled", "connect-per-transaction"}


def test_newest_run_is_the_latest_written(tmp_path: Path) -> None:
    with pytest.raises(ConnbenchError, match="no run folder"):
        R.newest_run(tmp_path / "results")
    root = tmp_path / "results"
    for i, name in enumerate(["20260101T000000Z-quick", "reference", "20250101T000000Z-smoke"]):
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text("{}")
        os.utime(root / name / "manifest.json", (1_000_000 + i, 1_000_000 + i))
    assert R.newest_run(root).name == "20250101T000000Z-smoke"


# -- uncertainty ---------------------------------------------------------------------------------------
def test_bootstrap_interval_of_the_median() -> None:
    rng = random.Random(1)
    sample = [rng.gauss(100, 10) for _ in range(400)]
    lo, hi = R.bootstrap_ci(sample)
    median = pd.Series(sample).median()
    assert lo < median < hi and hi - lo < 5  # the median of 400 draws is known to about ±1.2
    assert R.bootstrap_ci(sample) == (lo, hi)  # seeded: a report is reproducible
    small_lo, small_hi = R.bootstrap_ci(sample[:10])
    assert small_hi - small_lo > hi - lo  # fewer repeats, wider interval
    assert R.bootstrap_ci([5.0, 5.0, 5.0]) == (5.0, 5.0)
    assert all(v != v for v in R.bootstrap_ci([7.0]))  # one value: no interval (NaN)
    assert all(v != v for v in R.bootstrap_ci([float("nan"), 3.0]))
    assert R.within_noise((1, 3), (2, 4)) is True
    assert R.within_noise((1, 2), (3, 4)) is False
    assert R.within_noise((float("nan"), 1), (0, 2)) is None


def test_numbers_read_at_a_readable_precision() -> None:
    assert [R.num(v) for v in (37624.4, 314.2, 2.71, 0.214, 7.8e-05)] == ["37,624", "314", "2.71", "0.21", "7.8e-05"]
    assert R.num(0.002, "s") == "2 ms" and R.num(0.25, "s") == "0.25 s" and R.num(float("nan")) == "n/a"
    assert R.Estimate(0.002, 0.0015, 0.003, 3).text("s") == "2 ms [1.5–3]"  # an answer's seconds, with its interval
    assert R.Estimate(0.38, float("nan"), float("nan"), 1).text("s") == "0.38 s"


# -- the answers table and the top of the page, on the committed reference run (read only) ----------------
REFERENCE = REPO / "results" / "reference"
FIRST_FIGURE_WORDS = 600


def words_before_first_figure(html: str) -> int:
    """The words a reader passes before the first figure: the page's text up to its first image."""
    from bs4 import BeautifulSoup

    page = BeautifulSoup(html[: html.index("<img")], "html.parser")
    for tag in page(["style", "script"]):
        tag.decompose()
    return len(page.get_text(" ").split())


def test_each_answer_is_one_short_sentence_with_its_key_number() -> None:
    from benchmarks.results import questions as Q
    from benchmarks.results.findings.common import MAX_WORDS

    run = R.load_run(REFERENCE)
    for registry in (Q.QUESTIONS, Q.CLAIMS):
        for r in Q.answers(run, registry).itertuples():
            if r.answer.startswith("*Not measured"):
                continue  # which questions may go unmeasured in the reference: tests/unit/test_metrics.py
            words = r.answer.split()
            assert len(words) <= MAX_WORDS, f"{r.question}: {len(words)} words: {r.answer}"
            assert r.answer.endswith(".") and ". " not in r.answer, f"{r.question}: not one sentence: {r.answer}"
            assert any(ch.isdigit() for ch in r.answer), f"{r.question}: no key number: {r.answer}"
            assert len(r.detail.split()) > len(words), f"{r.question}: its details say no more than the answer"


def test_the_first_figure_comes_within_600_words_of_the_top(tmp_path: Path) -> None:
    """The reference run's page, up to its first figure: the notebook's cells through the first that draws (the
    rest of the page is the smoke report's, test_every_answer_links_to_its_details)."""
    import json as _json

    from benchmarks.results.report import NOTEBOOK, build_report

    run_dir = tmp_path / "reference"
    run_dir.mkdir()
    for name in ("manifest.json", "summary.csv", "timeseries.csv", "baseline.csv", "capacity.csv"):
        (run_dir / name).write_bytes((REFERENCE / name).read_bytes())
    nb = _json.loads(NOTEBOOK.read_text())
    first = next(i for i, c in enumerate(nb["cells"]) if 'save(fig, "' in "".join(c["source"]))
    nb["cells"] = nb["cells"][: first + 1]
    top = tmp_path / "top.ipynb"
    top.write_text(_json.dumps(nb))
    build_report(run_dir, top)
    assert words_before_first_figure((run_dir / "report.html").read_text()) <= FIRST_FIGURE_WORDS


def test_every_answer_links_to_its_details(smoke_dir: Path, smoke_report: subprocess.CompletedProcess) -> None:
    html = (smoke_dir / "report.html").read_text()
    from benchmarks.results import questions as Q

    for prefix, registry in (("answer", Q.QUESTIONS), ("claim", Q.CLAIMS)):  # the details: one click away
        for i in range(1, len(registry) + 1):
            assert f'href="#{prefix}-{i}"' in html and f'id="{prefix}-{i}"' in html, f"{prefix}-{i}"


# -- a synthetic run: levels, repeats, invalid cells, faults ---------------------------------------------
def test_answers_say_when_they_come_from_invalid_cells(tmp_path: Path) -> None:
    from benchmarks.results.findings import shared_client

    run_dir = write_synthetic_run(tmp_path / "synthetic")
    got = shared_client.answer(R.load_run(run_dir))
    assert got is not None and "global-asyncpg fails 60 %" in got.detail and "invalid" not in got.detail
    assert "global-asyncpg fails 60 % of requests;" in got.short
    summary = pd.read_csv(run_dir / "summary.csv")
    steady_global = (summary["scenario"] == "steady") & (summary["target"] == "global-asyncpg")
    summary.loc[steady_global, ["valid", "invalid_reason"]] = [False, "load generator CPU 95% > 90%"]
    summary.to_csv(run_dir / "summary.csv", index=False)
    got = shared_client.answer(R.load_run(run_dir))
    assert got is not None and "global-asyncpg fails" in got.detail and "set aside as invalid" in got.detail
    assert "(invalid cells: a floor)" in got.short


def test_report_on_a_run_with_repeats_levels_and_faults(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "synthetic")
    proc = run_connbench("report", str(run_dir), timeout=REPORT_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = check_report(run_dir, proc.stdout)
    assert {"errors", "baseline", "cold-start", "db-restart", "db-restart-timeline", "conn-cap"} <= names
    assert {"idle-timeout", "shutdown", "shutdown-timeline"} <= names
    run = R.load_run(run_dir)
    table = R.findings(run).set_index("target")
    assert list(table.index) == run.targets
    assert table.loc["per-request-asyncpg", "users"] == 32 and table.loc["per-request-asyncpg", "repeats"] == 3
    assert run.repeat_note().startswith("median of 3 repeats") and run.repeat_note("capacity") == "one run per cell"
    assert table.loc["pool-eager-asyncpg", "rps_lo"] < table.loc["pool-eager-asyncpg", "rps_hi"]
    assert "no valid steady cell" in table.loc["leaky-asyncpg", "note"]  # its only steady cells are invalid
    assert pd.isna(table.loc["leaky-asyncpg", "rps"])
    sentences = " ".join(R.sentences(run))
    assert "medians with 95% bootstrap intervals" in sentences
    assert "within noise" in sentences and "intervals are apart" in sentences
    assert "invalid" in sentences
    html = (run_dir / "report.html").read_text()
    assert "load generator CPU 97%" in html  # the invalid cells are listed with their reason


def write_synthetic_run(run_dir: Path, seed: int = 7) -> Path:
    """A plausible run folder in the current schema (no database): made-up numbers with the real shape."""
    rnd = random.Random(seed)
    run_dir.mkdir(parents=True)
    targets = ["global-asyncpg", "per-request-asyncpg", "pool-eager-asyncpg", "pool-eager-psycopg", "leaky-asyncpg"]
    scenarios = {
        "steady": {"kind": "load", "users": [1, 8, 32], "repeats": 3, "max_connections": 100},
        "spike": {"kind": "load", "users": [64], "repeats": 1, "max_connections": 100},
        "cold-start": {"kind": "cold-start", "users": [8], "repeats": 2, "max_connections": 100},
        "db-restart": {
            "kind": "load",
            "users": [16],
            "repeats": 1,
            "max_connections": 100,
            "description": "Steady load; PostgreSQL restarted mid-run (fast shutdown: every session is "
            "terminated), then held: who serves again?",
        },
        "conn-cap": {"kind": "load", "users": [32], "repeats": 1, "max_connections": 20},
        "idle-timeout": {"kind": "load", "users": [4], "repeats": 1, "max_connections": 100},
        "shutdown": {"kind": "load", "users": [8], "repeats": 1, "max_connections": 100},
    }
    base = {"global": (2.0, 3000), "per-request": (40.0, 200), "pool-eager": (2.5, 2500), "leaky": (30.0, 250)}
    summary, series = [], []

    def cell(scenario: str, target: str, users: int, repeat: int, **extra: object) -> dict:
        strategy, _, driver = target.rpartition("-")
        p50, rps = base[strategy]
        p50 *= (1 + users / 16) * rnd.uniform(0.9, 1.1)
        rps *= min(users, 8) / 8 * rnd.uniform(0.85, 1.15) if users < 8 else rnd.uniform(0.85, 1.15)
        err = 0.6 if strategy == "global" and users > 1 else 0.0
        requests = int(rps * 5)
        row = {c: "" for c in SUMMARY_COLUMNS}
        row.update(
            cell_id=f"{scenario}.{target}.u{users}.r{repeat}", scenario=scenario, target=target, strategy=strategy,
            driver=driver, users=users, repeat=repeat, workers=1, measure_s=5, requests=requests,
            failures=int(requests * err), error_rate=err, rps=rps, latency_p50_ms=round(p50, 1),
            latency_p90_ms=round(p50 * 1.8, 1), latency_p95_ms=round(p50 * 2, 1), latency_p99_ms=round(p50 * 3, 1),
            latency_max_ms=round(p50 * 6, 1), latency_mean_ms=p50 * 1.1,
            conn_peak={"global": 1, "per-request": min(users, 8), "pool-eager": 10, "leaky": 96}[strategy],
            conn_mean=5, sessions_opened=requests if strategy == "per-request" else 1,
            sessions_per_request=1.0 if strategy == "per-request" else 1 / requests,
            errors=json.dumps({"InterfaceError": int(requests * err)} if err else {}), time_to_ready_s=0.3,
            valid=True, invalid_reason="", counts_agree=True, target_exit=0,
        )  # fmt: skip
        row.update(extra)
        return row

    def seconds(row: dict, n: int = 10, events: dict[int, str] | None = None, down: tuple = ()) -> None:
        for t in range(n):
            up = t not in down
            series.append(
                {
                    "cell_id": row["cell_id"], "scenario": row["scenario"], "target": row["target"],
                    "users_level": row["users"], "repeat": row["repeat"], "t": t, "phase": "measure",
                    "users": row["users"], "rps": round(row["rps"] * (1 if up else 0)),
                    "failures": round(row["rps"] * (row["error_rate"] if up else 1)), "latency_p50_ms": 2,
                    "latency_p95_ms": 4, "latency_p99_ms": 6,
                    "conn_total": min(row["conn_peak"], 1 + 3 * t) if up else 0, "conn_active": 1, "conn_idle": 0,
                    "sessions_opened": 1, "db_up": up,
                    "event": (events or {}).get(t, "load-start" if t == 0 else ""),
                }
            )  # fmt: skip

    for users in (1, 8, 32):
        for repeat in (1, 2, 3):
            for t in targets:
                if t == "leaky-asyncpg":
                    row = cell("steady", t, users, repeat, valid=False, invalid_reason="load generator CPU 97% > 90%")
                else:
                    row = cell("steady", t, users, repeat)
                summary.append(row)
                if repeat == 1:
                    seconds(row)
    for t in targets:
        row = cell("spike", t, 64, 1)
        summary.append(row)
        seconds(row, 13)
        for repeat in (1, 2):
            eager = "eager" in t
            timings = {"time_to_ready_s": 0.9, "first_request_ms": 3.0, "first10_p50_ms": 2.5} if eager else {
                "time_to_ready_s": 0.3, "first_request_ms": 25.0, "first10_p50_ms": 18.0}  # fmt: skip
            summary.append(cell("cold-start", t, 8, repeat, **timings))
        if t != "leaky-asyncpg":
            gone = t.startswith("global")
            row = cell("db-restart", t, 16, 1, outage_s=10.0 if gone else 1.2, errors_after_action=900 if gone else 12,
                       recovery_s=None if gone else 0.4, recovered=not gone)  # fmt: skip
            summary.append(row)
            seconds(row, 12, {0: "load-start", 4: "db-stop:fast", 5: "db-up"}, down=(4,))
        if "pool-eager" in t or "leaky" in t:
            row = cell("conn-cap", t, 32, 1, errors_53300=0 if "pool" in t else 450, conn_peak=17)
            summary.append(row)
            seconds(row, 8)
        if t in ("global-asyncpg", "pool-eager-asyncpg"):
            row = cell("idle-timeout", t, 4, 1, errors_after_action=4 if "global" in t else 0, recovery_s=0.1,
                       recovered="pool" in t)  # fmt: skip
            summary.append(row)
            seconds(row, 8, {0: "load-start", 5: "mark:second-burst"})
        if t == "pool-eager-asyncpg":
            row = cell("shutdown", t, 8, 1, shutdown_logged=True, release_s=0.35, errors_after_action=0)
            summary.append(row)
            seconds(row, 6, {0: "load-start", 3: "sigterm"})
    manifest = {
        "schema_version": SCHEMA_VERSION, "run_id": run_dir.name, "profile": "quick", "status": "complete",
        "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:10:00+00:00", "targets": targets,
        "skipped_targets": {}, "scenarios": scenarios, "target_settings": {"pool_max": 10}, "git_commit": "abc",
        "versions": {"python": sys.version.split()[0], "postgresql": "15.0"},
        "machine": {"cores": 2, "memory_gb": 8.0, "cpu_model": "test CPU", "platform": "test"},
        "cells_total": len(summary), "cells_done": [r["cell_id"] for r in summary], "cells_missing": [],
    }  # fmt: skip
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    pd.DataFrame(summary, columns=SUMMARY_COLUMNS).to_csv(run_dir / "summary.csv", index=False)
    pd.DataFrame(series, columns=TIMESERIES_COLUMNS).to_csv(run_dir / "timeseries.csv", index=False)
    pd.DataFrame(
        [
            {"tool": "pgbench", "mode": "pooled", "clients": 8, "duration_s": 5, "tps": 30000, "latency_mean_ms": 0.2},
            {"tool": "pgbench", "mode": "connect-per-transaction", "clients": 8, "duration_s": 5, "tps": 300,
             "latency_mean_ms": 25, "connect_ms": 6.3},
        ]
    ).to_csv(run_dir / "baseline.csv", index=False)  # fmt: skip
    (run_dir / "raw").mkdir()
    return run_dir
