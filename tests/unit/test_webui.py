"""The web UI's start form and the panel's figures, without a stack: what the picker offers, why a start is
refused, errors by cause and the history's CSV."""

from __future__ import annotations

import os

# Importing Locust patches the whole process with gevent (threads, sockets, subprocess); these tests need its
# classes only, and the tests collected with them must keep the standard library they expect.
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
try:
    from benchmarks.load.panel import ConnectionMonitor, causes, table_rows
    from benchmarks.load.users import picker_classes, user_classes
    from benchmarks.load.webui import refusal
finally:
    del os.environ["LOCUST_SKIP_MONKEY_PATCH"]  # the Locust processes tests start must patch themselves


def test_the_web_ui_has_classes_for_the_running_targets_only_and_the_picker_one_model_at_a_time():
    urls = {"leaky-asyncpg": "http://127.0.0.1:1", "pool-lazy-asyncpg": "http://127.0.0.1:2"}
    classes = user_classes(["global-asyncpg", "leaky-asyncpg", "pool-lazy-asyncpg"], urls)
    assert sorted(classes) == [
        "arrival-leaky-asyncpg",
        "arrival-pool-lazy-asyncpg",
        "leaky-asyncpg",
        "pool-lazy-asyncpg",
    ]
    assert classes["leaky-asyncpg"].host == urls["leaky-asyncpg"]
    assert classes["leaky-asyncpg"].request_name == "leaky-asyncpg /db"
    closed = picker_classes(classes, arrival=False)
    opened = picker_classes(classes, arrival=True)
    assert list(closed) == list(opened) == ["leaky-asyncpg", "pool-lazy-asyncpg"]
    assert [c.__name__ for c in opened.values()] == ["arrival-leaky-asyncpg", "arrival-pool-lazy-asyncpg"]
    # `connbench run` (no URLs): every target's pair, named /db as before
    everything = user_classes(["global-asyncpg", "leaky-asyncpg"], {})
    assert len(everything) == 4 and everything["global-asyncpg"].request_name == "/db"


def test_a_start_that_cannot_work_is_refused_in_one_line():
    offered = picker_classes(user_classes(["leaky-asyncpg"], {"leaky-asyncpg": "http://127.0.0.1:9"}), False)
    assert refusal(["global-asyncpg"], offered, "0") == (
        "not running in this stack: global-asyncpg (running: leaky-asyncpg)"
    )
    assert refusal([], offered, "-5").startswith("arrival rate -5 is negative")
    assert refusal([], offered, "lots") == "arrival rate 'lots' is not a number"
    why = refusal(["leaky-asyncpg"], offered, "")  # port 9: nothing answers
    assert why == "no answer from leaky-asyncpg at http://127.0.0.1:9 (has it stopped?)"


def test_errors_by_cause_and_the_history_as_csv():
    assert causes({"PoolTimeout": 4, "TooManyConnectionsError": 120}) == "TooManyConnectionsError 120, PoolTimeout 4"
    monitor = ConnectionMonitor("postgresql://postgres:secret@127.0.0.1:1/postgres", ["leaky-asyncpg"])
    monitor.max_connections = 100
    monitor.history.append({"t": 10.0, "sessions_per_s": 3.5, "targets": {"leaky-asyncpg": [7, 2, 5, 1.25, 40]}})
    assert monitor.history_csv().splitlines() == [
        "time,target,connections,active,idle,sessions_opened_per_s,requests,database_sessions_opened_per_s,"
        "max_connections",
        "10.000,leaky-asyncpg,7,2,5,1.25,40,3.50,100",
    ]
    assert "secret" not in monitor.history_csv()
    snap = {**monitor.snapshot(), "db_up": True, "sessions_per_s": 3.5,
            "targets": [{"target": "leaky-asyncpg", "users": 2, "total": 7, "active": 2, "idle": 5,
                         "opened_per_s": 1.25, "requests": 40, "errors": {"TooManyConnectionsError": 3}}]}  # fmt: skip
    total, row = table_rows(snap)
    assert total["users"] == 2 and total["requests"] == 40 and total["sessions"] == "3.5"
    assert row["target"] == "leaky-asyncpg" and row["total"] == 7 and row["requests"] == 40
    assert row["sessions"] == "1.25" and row["errors"] == "TooManyConnectionsError 3"


def test_a_new_tests_history_starts_from_the_last_reading_before_it():
    # A leak can reach the cap within the first second; the reading before the start keeps the climb visible.
    monitor = ConnectionMonitor("postgresql://127.0.0.1:1/postgres", ["leaky-asyncpg"])
    for t, total in ((1.0, 94), (2.0, 0)):
        monitor.history.append({"t": t, "sessions_per_s": 0.0, "targets": {"leaky-asyncpg": [total, 0, total, 0, 0]}})
    monitor.restart_history()
    assert [s["t"] for s in monitor.history_json()["samples"]] == [2.0]
    monitor.history.clear()
    monitor.restart_history()
    assert monitor.history_json()["samples"] == []
