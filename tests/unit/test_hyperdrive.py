"""The Hyperdrive answer on a real run (tests/data/hyperdrive): a pooler next to the Worker against a client per
request straight across the distance."""

from __future__ import annotations

from pathlib import Path

from benchmarks.results.findings import hyperdrive
from benchmarks.results.findings.common import MAX_WORDS
from benchmarks.results.load import load_run
from benchmarks.results.path import distance_aggregate, round_trips_per_request

RUN = Path(__file__).parent.parent / "data" / "hyperdrive"


def test_the_pooler_next_to_the_worker_saves_round_trips_and_latency():
    run = load_run(RUN)
    slopes = round_trips_per_request(distance_aggregate(run)).set_index(["target", "pooler"])["round_trips"]
    direct, near_app = slopes[("worker-per-request", "")], slopes[("worker-pgbouncer", "near-app")]
    assert direct > near_app + 2  # a new connection's round trips, paid per request only without the pooler
    got = hyperdrive.answer(run)
    assert got is not None and len(got.short.split()) <= MAX_WORDS
    assert f"saves {direct - near_app:.1f} round trips per request" in got.short
    assert got.key is not None and got.key.target == "worker-pgbouncer" and "near-app" in got.key.at


def test_without_both_paths_there_is_no_answer():
    run = load_run(RUN)
    run.summary = run.summary[run.summary["target"] != "worker-pgbouncer"]
    assert hyperdrive.answer(run) is None
