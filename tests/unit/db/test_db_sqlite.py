"""tunelab.db on SQLite: opening, migrations from empty, WAL, errors that hide passwords."""

from __future__ import annotations

import logging
import socket
import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from db_records import COLUMNS, REVIEW_TABLES, make_record, private_record
from tunelab.cli import exits
from tunelab.db import (
    NAME_LENGTH,
    RequestLogWriter,
    default_database_url,
    open_database,
    recent_requests,
    safe_url,
)
from tunelab.db.tables import Base, RequestLogRow
from tunelab.errors import DatabaseError


def test_default_database_is_a_file_in_the_tunelab_home(tmp_path):
    # conftest sets TUNELAB_HOME to tmp_path / "tunelab_home" for every test
    assert default_database_url() == f"sqlite:///{tmp_path}/tunelab_home/tunelab.db"
    with open_database() as db:
        assert db.backend == "sqlite"
    assert (tmp_path / "tunelab_home" / "tunelab.db").is_file()


def test_migrations_from_empty_make_the_table_and_record_the_revision(tmp_path):
    path = tmp_path / "new" / "folder" / "log.db"  # the folders are made
    with open_database(f"sqlite:///{path}") as db:
        insp = inspect(db.engine)
        assert set(insp.get_table_names()) == {"alembic_version", "request_log", "feedback",
                                               "experiment_assignment", *REVIEW_TABLES}
        assert {c["name"] for c in insp.get_columns("request_log")} == COLUMNS
        assert insp.get_pk_constraint("request_log")["constrained_columns"] == ["id"]
        indexes = {i["name"]: i["column_names"] for i in insp.get_indexes("request_log")}
        assert indexes == {"ix_request_log_created_at": ["created_at"],
                           "ix_request_log_model": ["model"],
                           "ix_request_log_request_id": ["request_id"],
                           "ix_request_log_experiment": ["experiment", "variant"]}
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() \
                == [("0003",)]
            # the tables module and the migrations describe the same schema
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    # a second open upgrades nothing and keeps the rows
    with open_database(f"sqlite:///{path}") as db:
        with db.session() as s:
            s.add(RequestLogRow(**vars(make_record(1))))
        with open_database(f"sqlite:///{path}") as again:
            assert [r.request_id for r in recent_requests(again)] == ["chatcmpl-000001"]


def test_every_connection_is_wal_with_full_sync_and_a_busy_timeout(tmp_path):
    path = tmp_path / "log.db"
    with open_database(f"sqlite:///{path}") as db, db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    # WAL is a property of the file: a plain sqlite3 connection sees it too
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_rows_written_through_the_writer_are_there_after_close(tmp_path):
    records = [make_record(i) for i in range(5)] + [private_record(i) for i in range(5, 8)]
    with open_database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        writer = RequestLogWriter(db, flush_interval=0.2)
        writer.start()
        for r in records:
            writer.write(r)
        writer.close()
        assert (writer.written, writer.dropped, writer.pending) == (8, 0, 0)
        back = recent_requests(db)
    assert back == records[::-1]  # newest first; every field round-trips, None included
    assert back[0].prompt is None and back[0].answer is None
    assert all(r.created_at.tzinfo is not None and r.created_at.utcoffset().total_seconds() == 0
               for r in back)
    assert recent_requests(db, limit=2) == records[:-3:-1]


def test_the_writer_flushes_within_its_interval_without_closing(tmp_path):
    import time

    with open_database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        writer = RequestLogWriter(db, flush_interval=0.1)
        writer.start()
        writer.write(make_record(1))
        deadline = time.monotonic() + 5
        while writer.written < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer.written == 1
        assert [r.request_id for r in recent_requests(db)] == ["chatcmpl-000001"]
        writer.close()


def test_a_writer_closed_without_start_still_writes(tmp_path):
    with open_database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        writer = RequestLogWriter(db)
        writer.write(make_record(1))
        writer.close()
        writer.write(make_record(2))  # after close: dropped, counted
        assert (writer.written, writer.dropped) == (1, 1)
        assert len(recent_requests(db)) == 1


def test_values_are_made_storable_and_a_clip_is_warned_about(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="tunelab.db")
    with open_database(f"sqlite:///{tmp_path / 'log.db'}") as db:
        writer = RequestLogWriter(db)
        writer.write(make_record(1, prompt="a\x00b", model="m" * 5000, user="u" * NAME_LENGTH))
        writer.close()
        (back,) = recent_requests(db)
    assert back.prompt == "a\ufffdb" and back.model == "m" * NAME_LENGTH
    assert back.user == "u" * NAME_LENGTH  # at the limit: kept whole, no warning
    clips = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
    assert len(clips) == 1 and f"model of {back.request_id} clipped from 5000 to {NAME_LENGTH}" in clips[0]
    assert "mmm" not in caplog.text  # the value itself is never logged


@pytest.mark.parametrize("url, shown", [
    ("postgresql://alice:s3cret@db.example:5432/log", "postgresql://alice:***@db.example:5432/log"),
    ("postgresql://alice@h/log?password=s3cret&sslmode=require",
     "postgresql://alice@h/log?sslmode=require"),
    ("sqlite:////var/lib/x.db", "sqlite:////var/lib/x.db"),
    ("postgresql:/alice:s3cret@host/db", "postgresql:/***@host/db"),  # these do not parse
    ("pg is ://alice:s3cret@host/db", "***@host/db"),
    ("postgresql://alice:s3@cret@host/db", "postgresql://***@host/db"),  # "@" unescaped
])
def test_safe_url_hides_the_password(url, shown):
    assert safe_url(url) == shown


@pytest.mark.parametrize("url, words", [
    ("postgresql:/alice:s3cret@host/db", "is not a database URL"),
    ("mysql://bob:s3cret@localhost/log", "SQLite or PostgreSQL"),
    ("sqlite://", "in memory"),
    ("sqlite:///:memory:", "in memory"),
    ("postgresql://bob:s3cret@localhost:5432", "names no database"),
    ("postgresql://bob:s3@cret@localhost/log", "in its password"),
])
def test_a_bad_url_is_a_database_error_without_the_password(url, words):
    with pytest.raises(DatabaseError, match=words) as info:
        open_database(url)
    assert "s3cret" not in str(info.value) and info.value.hint
    assert exits.exit_code(info.value) == exits.DATABASE


def test_an_unreachable_postgresql_server_is_a_database_error_without_the_password():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://tunelab:s3cret-pw@127.0.0.1:{port}/log"
    with pytest.raises(DatabaseError) as info:
        open_database(url)
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert f"postgresql://tunelab:***@127.0.0.1:{port}/log" in message
    assert "refused" in message.lower() and "server is running" in info.value.hint


def test_a_folder_that_cannot_be_made_or_a_file_that_is_not_sqlite(tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(DatabaseError, match="cannot make the folder"):
        open_database(f"sqlite:///{tmp_path / 'plain' / 'log.db'}")
    (tmp_path / "junk.db").write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(DatabaseError, match="cannot open the database") as info:
        open_database(f"sqlite:///{tmp_path / 'junk.db'}")
    assert "SQLite database" in info.value.hint


def test_a_database_of_the_first_revision_is_upgraded_and_keeps_its_rows(tmp_path):
    from alembic import command

    from tunelab.db.database import alembic_config

    path = tmp_path / "old.db"
    with open_database(f"sqlite:///{path}") as db, db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
        assert "feedback" not in inspect(conn).get_table_names()
        conn.execute(text("INSERT INTO request_log (request_id, created_at, endpoint, model, "
                          "prompt_tokens, completion_tokens, latency_ms, status_code, stream) "
                          "VALUES ('chatcmpl-old', '2026-11-30 10:00:00', 'chat.completions', "
                          "'m', 1, 2, 3.0, 200, 0)"))
    with open_database(f"sqlite:///{path}") as db:
        old = recent_requests(db)
        assert [(r.request_id, r.experiment, r.variant) for r in old] == [("chatcmpl-old", None, None)]
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [("0003",)]
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
