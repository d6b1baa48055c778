"""The failure scenarios' arithmetic on made-up data: the hang after a silent drop, how long PostgreSQL held a
frozen process's connections, and which events start and end a fault."""

from __future__ import annotations

from benchmarks.run import faults as F


def test_the_longest_failure_counts_only_those_after_the_gap() -> None:
    final = {"failure_spans_s": [[1.0, 1.5, "TimeoutError", 2], [10.0, 14.0, "Unanswered", 4], [11.0, 12.0, "X", 1]]}
    assert F.longest_failure_s(final, since=10.0) == 4.0
    assert F.longest_failure_s(final, since=20.0) is None
    assert F.longest_failure_s({}, since=0) is None


def test_released_after_needs_no_connection_from_then_on() -> None:
    def sample(t: float, n: int) -> dict:
        return {"t": t, "db_up": True, "connections": {"app": {"total": n}}}

    frozen = [sample(0.0, 10), sample(1.0, 10), sample(2.2, 4), sample(2.4, 0), sample(3.0, 0)]
    assert F.released_after("app", 1.0, frozen) == 1.4
    assert F.released_after("app", 1.0, [*frozen, sample(3.5, 2)]) is None  # came back: not released
    assert F.released_after("other", 0.0, frozen) == 0.0


def test_pooler_and_freeze_events_start_and_end_a_fault() -> None:
    bins = {"ticks": {"10": {"ok": 5}, "20": {"ok": 0, "ConnectionRefusedError": 3}, "22": {"ok": 4}}}
    events = [(0.0, "load-start"), (2.0, "pooler-stop:fast"), (2.15, "pooler-up")]
    got = F.action_metrics(None, [], events, 0.0, final=bins)  # type: ignore[arg-type]
    assert got["errors_after_action"] == 3 and got["recovered"]
    assert got["recovery_s"] == 0.15  # from pooler-up to the end of the first 100 ms with a success
    assert "freeze" in F.FAULT_STARTS and "thaw" in F.FAULT_ENDS
