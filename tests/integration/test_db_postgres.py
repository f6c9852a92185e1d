"""tunelab.db on a real PostgreSQL server that the test starts (tests/pg.py).

Migrations from an empty database, rows through the writer read back with
``recent_requests``, three processes opening one database at once, values PostgreSQL would
refuse (NUL, overlong names) made storable.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from db_records import (
    COLUMNS,
    REVIEW_TABLES,
    assert_concurrent_opens_succeed,
    make_record,
    private_record,
)
from tunelab.db import RequestLogWriter, open_database, recent_requests
from tunelab.db.tables import Base


def test_migrations_from_empty_on_postgresql(fresh_postgres_url):
    bare = create_engine(fresh_postgres_url)
    assert inspect(bare).get_table_names() == []  # really empty before
    bare.dispose()
    with open_database(fresh_postgres_url) as db:
        assert db.backend == "postgresql"
        insp = inspect(db.engine)
        assert set(insp.get_table_names()) == {"alembic_version", "request_log", "feedback",
                                               "experiment_assignment", *REVIEW_TABLES}
        columns = {c["name"]: c for c in insp.get_columns("request_log")}
        assert set(columns) == COLUMNS
        assert str(columns["id"]["type"]) == "BIGINT" and columns["id"]["autoincrement"]
        assert columns["created_at"]["type"].timezone  # timestamptz
        assert {i["name"] for i in insp.get_indexes("request_log")} \
            == {"ix_request_log_created_at", "ix_request_log_model", "ix_request_log_request_id",
                "ix_request_log_experiment"}
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() \
                == [("0003",)]
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_three_processes_opening_one_new_database_at_once_take_turns(fresh_postgres_url):
    assert_concurrent_opens_succeed(fresh_postgres_url)
    with open_database(fresh_postgres_url) as db, db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [("0003",)]


def test_rows_written_by_the_writer_are_read_back(postgres_url):
    records = [make_record(i) for i in range(6)] + [private_record(6)]
    # the plain postgresql:// scheme works too (psycopg 3 is chosen)
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with open_database(url) as db:
        with db.engine.begin() as conn:
            conn.execute(text("DELETE FROM request_log"))
        writer = RequestLogWriter(db, flush_interval=0.1)
        writer.start()
        for r in records:
            writer.write(r)
        writer.write(make_record(7, prompt="nul \x00 inside", model="m" * 500))
        writer.close()
        assert (writer.written, writer.dropped) == (8, 0)
        back = recent_requests(db)
    assert back[1:] == records[::-1]  # every field, None and time zone included
    assert back[0].prompt == "nul \ufffd inside" and back[0].model == "m" * 200
    # a second open of a migrated database changes nothing; postgres:// is understood too
    with open_database(postgres_url.replace("postgresql+psycopg://", "postgres://")) as again:
        assert len(recent_requests(again, limit=3)) == 3
