"""The metrics layer and the findings registry on the committed reference run (results/reference, read only).

Pure logic: nothing is started. A test that changes a setting works on a copy of the run's files in tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.results import fmt
from benchmarks.results import metrics as M
from benchmarks.results import questions as Q
from benchmarks.results.findings import leaks, pooler
from benchmarks.results.findings.faults import FAULT_COLUMNS, GENERIC_FAULT_COLUMNS
from benchmarks.results.load import RunData, load_run
from benchmarks.results.path import distance_aggregate, pooler_placements
from benchmarks.results.summary import SUMMARY_COLUMNS

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference"
RUN_FILES = ["manifest.json", "summary.csv", "timeseries.csv", "baseline.csv", "capacity.csv"]


@pytest.fixture(scope="module")
def ref() -> RunData:
    return load_run(REFERENCE)


def copy_run(dest: Path) -> Path:
    """The reference run's files (not its raw/ folder nor its report) in `dest`, to change a setting in."""
    dest.mkdir()
    for name in RUN_FILES:
        shutil.copy(REFERENCE / name, dest / name)
    return dest


def test_every_metric_says_how_it_is_computed_its_unit_and_direction() -> None:
    for name, m in M.METRICS.items():
        assert m.label and m.description, name
        assert m.better in (M.HIGHER, M.LOWER, None), name
        assert m.compute is not None or name in SUMMARY_COLUMNS, f"{name} is neither a summary column nor computed"
    for name in {c for cols in FAULT_COLUMNS.values() for c in cols} | set(GENERIC_FAULT_COLUMNS):
        assert name in M.METRICS, f"the fault figures show {name}, which the registry lacks"
    assert M.METRICS["rps"].better == M.HIGHER and M.METRICS["latency_p99_ms"].better == M.LOWER
    assert M.label("release_s") == ("connections released after", "s")


def test_an_estimate_is_the_median_of_the_valid_repeats_with_its_interval(ref: RunData) -> None:
    e = M.estimate(ref, "latency_p50_ms", "steady", "pool-eager-asyncpg")
    cells = ref.summary[(ref.summary["scenario"] == "steady") & (ref.summary["target"] == "pool-eager-asyncpg")]
    assert e is not None and e.n == int(cells["valid"].sum()) == 2  # quick: two repeats of steady
    assert e.value == cells.loc[cells["valid"], "latency_p50_ms"].median()
    assert e.lo <= e.value <= e.hi
    assert M.estimate(ref, "latency_p50_ms", "steady", "no-such-target") is None
    # a computed metric: what was served is the throughput less the failures
    served = M.estimate(ref, "served_rps", "slow-work", "pool-eager-asyncpg")
    rps = M.estimate(ref, "rps", "slow-work", "pool-eager-asyncpg")
    assert served is not None and rps is not None and served.value < rps.value


# A question newer than the reference run, with the scenario its answer needs; it may answer "Not measured"
# there only while the reference lacks that scenario.
NEWER_THAN_REFERENCE: dict[str, str] = {}  # none: the reference run has every question's scenario


def test_every_question_and_claim_is_answered_from_the_reference_run(ref: RunData) -> None:
    for registry in (Q.QUESTIONS, Q.CLAIMS):
        table = Q.answers(ref, registry)
        assert len(table) == len(registry)
        missing = table[table["answer"].str.contains("Not measured")]
        # a question newer than the reference run may lack its cells there, and only for want of its scenario
        newer = {q: s for q, s in NEWER_THAN_REFERENCE.items() if s not in set(ref.summary["scenario"])}
        assert set(missing["question"]) <= set(newer), missing[["question", "answer"]]


def test_the_settings_a_sentence_quotes_come_from_the_run(tmp_path: Path, ref: RunData) -> None:
    got = leaks.answer(ref)
    assert got is not None and got.detail.startswith(f"With max_connections {ref.max_connections('conn-cap')} and ")
    run_dir = copy_run(tmp_path / "run")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["scenarios"]["conn-cap"].update(max_connections=37, workers=5)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    summary = pd.read_csv(run_dir / "summary.csv", dtype=str, keep_default_na=False)
    summary.loc[summary["scenario"] == "conn-cap", "workers"] = "5"
    summary.to_csv(run_dir / "summary.csv", index=False)
    changed = load_run(run_dir)
    got = leaks.answer(changed)
    assert got is not None
    for sentence in (got.short, got.detail):
        assert sentence.startswith("With max_connections 37 and 5 workers per target: "), sentence
    got = pooler.answer(changed)
    assert got is not None and got.detail.startswith("Behind PgBouncer, 5 workers fail "), got.detail
    assert "5 workers behind PgBouncer" in got.short, got.short


def test_where_the_pooler_sits_is_read_from_the_path_table(ref: RunData) -> None:
    placements = pooler_placements(distance_aggregate(ref))
    assert placements, "the reference run has PgBouncer near the database and near the app"
    p = placements[0]
    assert p.rtt_ms > 0 and p.saved_ms == p.near_db_ms - p.near_app_ms
    got = pooler.answer(ref)
    assert got is not None and pooler.placement_text(p) in got.detail
    assert f"saves {fmt.num(p.saved_ms)} ms per request" in got.short


def test_an_answer_says_whether_its_key_number_carries_to_another_machine(ref: RunData) -> None:
    # shares and counts that a second machine measured alike (docs/trust.md), times and rates that it did not
    assert all(M.METRICS[m].travels for m in ("sessions_per_request", "conn_peak", "error_rate", "shutdown_logged"))
    assert not any(M.travels(m) for m in ("rps", "latency_p50_ms", "first_request_ms", "sustainable_rps"))
    table = Q.answers(ref, Q.QUESTIONS).set_index("question")
    assert not table.loc["What does a connection cost?", "travels"]  # a p50
    assert table.loc["What does a client created per call and never closed do?", "travels"]  # connections
    assert set(table["travels"]) <= {True, False, None}


def test_pool_size_at_a_distance_sets_little_s_law_beside_the_measured_rate(tmp_path: Path) -> None:
    """The reference's pool-size cells copied as if run at 10 ms RTT, each request holding its connection
    10 ms: Little's law caps pool_max 4 at 400 req/s; the loopback cells stay the pool-size answer's own."""
    from benchmarks.results.findings import pool_size
    from benchmarks.results.path import path_scenarios

    run_dir = copy_run(tmp_path / "run")
    summary = pd.read_csv(run_dir / "summary.csv", dtype=str, keep_default_na=False)
    far = summary[summary["scenario"] == "pool-size"].copy()
    far["rtt_ms"], far["query_p50_ms"] = "10", "10"
    far["cell_id"] = far["cell_id"].str.replace(".r1", ".rtt10.r1", regex=False)
    pd.concat([summary, far]).to_csv(run_dir / "summary.csv", index=False)
    run = load_run(run_dir)
    table = pool_size.at_distance(run).set_index("pool_max")
    assert set(table["rtt_ms"]) == {10} and table.loc[4, "little_rps"] == 400
    assert "pool-size" not in path_scenarios(run)  # its own figure, not the connection-path ones
    said = " ".join(pool_size.sentences(run))
    assert "at 10 ms RTT" in said and "caps pool_max 1 at 100 req/s" in said
    answer = pool_size.answer(run)
    assert answer is not None and answer.detail.count("10 ms RTT") == 1
