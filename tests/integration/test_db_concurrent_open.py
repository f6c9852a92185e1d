"""Processes that open one new SQLite database at the same moment all succeed (one migrates)."""

from __future__ import annotations

import threading

from sqlalchemy import text

from db_records import assert_concurrent_opens_succeed
from tunelab.db import open_database


def test_three_processes_opening_one_new_sqlite_file_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    assert_concurrent_opens_succeed(url)
    with open_database(url) as db, db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [("0003",)]


def test_threads_of_one_process_opening_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    errors: list[BaseException] = []

    def open_and_close():
        try:
            open_database(url).close()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and errors == []
