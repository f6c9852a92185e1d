"""`tunelab serve --db postgresql://...`: the request log on a real PostgreSQL server.

The server is started by the test itself (``tests/pg.py``: initdb into a temporary
folder as the ``postgres`` user, a free loopback port); the database starts empty, so
the serve process applies the migrations from nothing.
"""

import time

import pytest
from serve_server import start_server

pytestmark = pytest.mark.slow


def test_requests_served_are_logged_in_postgresql(tmp_path, tiny_model_dir, fresh_postgres_url):
    from sqlalchemy import inspect, text

    from tunelab.db import open_database, recent_requests

    server = start_server(tmp_path / "serve", [str(tiny_model_dir)], db_url=fresh_postgres_url)
    try:
        client = server.client()
        answers = [client.chat.completions.create(
            model=str(tiny_model_dir), messages=[{"role": "user", "content": f"ticket {i}"}],
            max_tokens=4, temperature=0, user="team-a") for i in range(2)]
        db = open_database(fresh_postgres_url)
        try:
            deadline = time.monotonic() + 15
            rows = []
            while len(rows) < 2 and time.monotonic() < deadline:  # flushed every second
                rows = recent_requests(db)
                time.sleep(0.3)
            assert db.backend == "postgresql"
            tables = set(inspect(db.engine).get_table_names())
            assert {"request_log", "alembic_version"} <= tables
            with db.engine.connect() as conn:
                assert conn.execute(text("select count(*) from alembic_version")).scalar() == 1
        finally:
            db.close()
    finally:
        assert server.stop() == 0
    assert sorted(r.request_id for r in rows) == sorted(a.id for a in answers)
    for r in rows:
        assert r.status_code == 200 and r.user == "team-a" and r.completion_tokens > 0
        assert r.prompt is not None and "ticket" in r.prompt
