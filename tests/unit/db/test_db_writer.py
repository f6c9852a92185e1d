"""RequestLogWriter when the database fails: rows kept and retried, bounded, logged without text.

The failures are real: the table is renamed away under the writer (SQLite reports "no
such table" as an operational error, like a lost connection) and renamed back.
"""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest

from db_records import make_record
from tunelab.db import RequestLogWriter, open_database, recent_requests
from tunelab.errors import UsageError


def _wait(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _rename(path, old: str, new: str) -> None:
    conn = sqlite3.connect(path, timeout=10)
    conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
    conn.commit()
    conn.close()


@pytest.fixture
def db(tmp_path):
    with open_database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        yield db


def test_rows_are_kept_while_the_database_fails_and_written_when_it_is_back(db, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="tunelab.db")
    _rename(tmp_path / "log.db", "request_log", "hidden")
    writer = RequestLogWriter(db, flush_interval=0.1)
    writer.start()
    for i in range(3):
        writer.write(make_record(i, prompt=f"SECRET PROMPT {i}", answer="SECRET ANSWER"))
    time.sleep(0.5)  # several failed flushes
    assert (writer.written, writer.pending, writer.dropped) == (0, 3, 0)
    _rename(tmp_path / "log.db", "hidden", "request_log")
    assert _wait(lambda: writer.written == 3)
    writer.close()
    assert [r.request_id for r in recent_requests(db)] == [f"chatcmpl-{i:06d}" for i in (2, 1, 0)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no such table" in warnings[0].getMessage()  # once, not per try
    assert any("again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert "SECRET" not in caplog.text


def test_a_full_writer_drops_counts_and_logs_once(db, tmp_path, caplog):
    _rename(tmp_path / "log.db", "request_log", "hidden")
    writer = RequestLogWriter(db, flush_interval=0.1, max_pending=2)
    writer.start()
    for i in range(5):
        writer.write(make_record(i))  # never waits, even with the database down
    assert (writer.pending, writer.dropped) == (2, 3)
    assert sum("dropping rows" in r.getMessage() for r in caplog.records) == 1
    _rename(tmp_path / "log.db", "hidden", "request_log")
    assert _wait(lambda: writer.written == 2)
    writer.close()


def test_a_row_the_database_refuses_is_dropped_and_the_others_written(db, caplog):
    writer = RequestLogWriter(db, flush_interval=0.1)
    writer.start()
    writer.write(make_record(1))
    writer.write(make_record(2, model=None, prompt="SECRET"))  # NOT NULL: refused
    writer.write(make_record(3))
    writer.close()
    assert (writer.written, writer.dropped) == (2, 1)
    assert [r.request_id for r in recent_requests(db)] == ["chatcmpl-000003", "chatcmpl-000001"]
    assert "IntegrityError" in caplog.text and "SECRET" not in caplog.text


def test_rows_still_pending_when_the_database_stays_down_are_counted_as_dropped(db, tmp_path):
    _rename(tmp_path / "log.db", "request_log", "hidden")
    writer = RequestLogWriter(db, flush_interval=0.1)
    writer.start()
    writer.write(make_record(1))
    writer.close()
    assert (writer.written, writer.dropped, writer.pending) == (0, 1, 0)


def test_write_does_not_wait_on_a_locked_database(db, tmp_path):
    """Another process holds the write lock: write() returns at once, the flush waits."""
    blocker = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    writer = RequestLogWriter(db, flush_interval=0.05)
    writer.start()
    start = time.perf_counter()
    for i in range(200):
        writer.write(make_record(i))
    assert time.perf_counter() - start < 0.5
    time.sleep(0.3)
    assert writer.written == 0
    blocker.execute("COMMIT")
    blocker.close()
    assert _wait(lambda: writer.written == 200, seconds=15)
    writer.close()


def test_settings_out_of_range_are_usage_errors(db):
    with pytest.raises(UsageError, match="flush_interval"):
        RequestLogWriter(db, flush_interval=0)
    with pytest.raises(UsageError, match="max_pending"):
        RequestLogWriter(db, max_pending=0)


def test_flush_soon_commits_before_the_interval_is_up(tmp_path):
    with open_database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        writer = RequestLogWriter(db, flush_interval=60)
        writer.start()
        try:
            writer.write(make_record(1))
            time.sleep(0.3)
            assert writer.written == 0  # the interval is a minute
            writer.flush_soon()
            deadline = time.monotonic() + 10
            while writer.written == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert writer.written == 1 and time.monotonic() < deadline
        finally:
            writer.close()
