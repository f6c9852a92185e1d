"""`POST /v1/feedback` against a real `tunelab serve` process: answers, durability, load.

The route's answers (200 with replays, 404, 422 naming the field, 401, 413), feedback
posted the moment an answer arrives (before the request log has written it), and the
issue's durability tests: 20 concurrent writers for 30 s on SQLite and on a real
PostgreSQL server started by the test (``tests/pg.py``), zero 5xx and every
acknowledged write in the database; and the server killed with SIGKILL mid-writes,
losing no acknowledged write, the ids still known after a restart. The writers and the
check are the benchmark's (``benchmarks/feedback_writes.py``), so it is tested here.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
from serve_server import KEY, Server, http_call, metric, next_event, open_stream, start_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from feedback_writes import lost_writes, make_responses, run_writers  # noqa: E402

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Where is my parcel?"}],
        "temperature": 0, "max_tokens": 4}


def _config(model_dir: Path) -> dict:
    return {"aliases": {"tiny": str(model_dir)}, "max_batch_size": 4, "max_queue": 64}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    s = start_server(tmp_path_factory.mktemp("serve-feedback"), [], _config(tiny_model_dir))
    yield s
    s.stop()


def _answer(server: Server) -> str:
    return server.client().chat.completions.create(**CHAT).id


def _post(server: Server, body, key: str | None = KEY, **headers: str):
    return http_call(server, "POST", "/v1/feedback", body, key=key, headers=headers)


def _row(server: Server, response_id: str, user: str = ""):
    from tunelab.db import open_database
    from tunelab.db.feedback import get_feedback

    with open_database(server.db_url) as db:
        return get_feedback(db, response_id, user)


# --- answers ------------------------------------------------------------------------------

def test_feedback_is_stored_and_a_retried_key_replays_it(server):
    rid = _answer(server)
    before = metric(server, "tunelab_feedback_total", model="tiny", kind="up") or 0
    body = {"response_id": rid, "rating": "up", "score": 5, "user": "ann",
            "correction": "It is in Lyon.", "comment": "good"}
    status, headers, first = _post(server, body, **{"Idempotency-Key": "key-1"})
    assert status == 200, first
    assert first["object"] == "feedback" and first["response_id"] == rid
    assert first["id"].startswith("fb-") and abs(first["created"] - time.time()) < 60
    assert "idempotent-replayed" not in headers
    status, headers, again = _post(server, body, **{"Idempotency-Key": "key-1"})
    assert status == 200 and again == first and headers["idempotent-replayed"] == "true"
    status, _, err = _post(server, {**body, "rating": "down"}, **{"Idempotency-Key": "key-1"})
    assert status == 422 and err["error"]["code"] == "idempotency_key_reused"
    row = _row(server, rid, "ann")
    assert (row.rating, row.score, row.correction, row.comment) == ("up", 5, "It is in Lyon.", "good")
    assert metric(server, "tunelab_feedback_total", model="tiny", kind="up") == before + 1
    # the same user again, without a key: the same row, updated (last write wins)
    status, _, third = _post(server, {"response_id": rid, "user": "ann", "rating": "down"})
    assert status == 200 and third["id"] == first["id"]
    row = _row(server, rid, "ann")
    assert row.rating == "down" and row.score == 5 and row.updated_at > row.created_at


def test_an_unknown_response_is_404(server):
    status, _, err = _post(server, {"response_id": "chatcmpl-nosuchthing", "rating": "up"})
    assert status == 404 and err["error"]["code"] == "response_not_found"
    assert err["error"]["param"] == "response_id" and err["error"]["type"] == "not_found_error"


def test_an_answer_another_server_logs_a_moment_later_takes_its_feedback(server):
    # another server on the same database answered it; its log writer commits ~1 s later
    from dataclasses import asdict

    from db_records import make_record
    from tunelab.db import open_database
    from tunelab.db.tables import RequestLogRow

    def log_it_later() -> None:
        time.sleep(0.8)
        row = make_record(1, request_id="chatcmpl-fromanotherserver", model="tiny")
        with open_database(server.db_url) as db, db.session() as s:
            s.add(RequestLogRow(**asdict(row)))
            s.commit()

    writer = threading.Thread(target=log_it_later)
    writer.start()
    status, _, body = _post(server, {"response_id": "chatcmpl-fromanotherserver", "rating": "up"})
    writer.join()
    assert status == 200, body
    assert _row(server, "chatcmpl-fromanotherserver").rating == "up"


@pytest.mark.parametrize(("change", "param"), [
    ({"colour": "red"}, "colour"),
    ({"rating": "meh"}, "rating"),
    ({"score": 6}, "score"),
    ({"score": "4"}, "score"),
    ({"score": 4.5}, "score"),
    ({"comment": "x" * 20_001}, "comment"),
    ({"user": "u" * 201}, "user"),
    ({"comment": "a\u0000b"}, "comment"),  # PostgreSQL text cannot hold it: 422, not 503
    ({"rating": None}, None),  # says nothing
])
def test_bad_values_are_422_naming_the_field(server, change, param):
    body = {"response_id": "chatcmpl-any", "rating": "up", **change}
    status, _, err = _post(server, {k: v for k, v in body.items() if v is not None})
    assert status == 422, err
    assert err["error"]["param"] == param and err["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert err["error"]["message"].startswith(f"{param}: ")


def test_a_body_that_is_no_object_or_no_json_and_a_long_key_are_refused(server):
    assert _post(server, None)[0] == 400  # no body at all: not JSON
    status, _, err = http_call(server, "POST", "/v1/feedback", raw=b"{not json")
    assert status == 400 and err["error"]["code"] == "invalid_json"
    status, _, err = _post(server, [1, 2])
    assert status == 422 and "JSON object" in err["error"]["message"]
    status, _, err = _post(server, {"rating": "up"})
    assert status == 422 and err["error"]["param"] == "response_id"
    status, _, err = _post(server, {"response_id": "x", "rating": "up"},
                           **{"Idempotency-Key": "k" * 101})
    assert status == 422 and err["error"]["param"] == "Idempotency-Key"


def test_the_key_and_the_body_cap_apply(server):
    body = {"response_id": "chatcmpl-any", "rating": "up"}
    assert _post(server, body, key=None)[0] == 401
    assert _post(server, body, key="wrong")[0] == 401
    status, _, err = _post(server, {**body, "comment": "x" * 1_100_000})
    assert status == 413 and err["error"]["code"] == "request_too_large"


def test_feedback_sent_before_the_log_has_the_answer_waits_for_it(server):
    from tunelab.db import open_database
    from tunelab.db.feedback import response_status

    with open_database(server.db_url) as db:
        for _ in range(10):  # the log flushes every second: most answers are caught unlogged
            rid = _answer(server)
            if response_status(db, rid) is None:
                break
        else:
            pytest.fail("every answer was logged before it could be rated")
        status, _, out = _post(server, {"response_id": rid, "score": 3})
        assert status == 200, out
        assert response_status(db, rid) == 200  # the answer's row is there now, too
    assert _row(server, rid).score == 3


def test_a_response_whose_client_left_takes_no_feedback(server):
    conn, resp = open_stream(server, {**CHAT, "max_tokens": 480})
    rid = json.loads(next_event(resp))["id"]
    next_event(resp)
    conn.sock.close()  # the client goes away mid-answer: logged with status 499
    conn.close()
    deadline = time.monotonic() + 10
    while True:  # until the server has noticed the client left
        status, _, err = _post(server, {"response_id": rid, "rating": "down"})
        if status != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 422 and err["error"]["code"] == "response_not_answered"
    assert "499" in err["error"]["message"]


# --- durability and load ------------------------------------------------------------------

def _load(s: Server, db_url: str) -> None:
    """20 writers for 30 s against ``s``: no 5xx, no failure, every acknowledged write kept."""
    ids = make_responses(s.url, "tiny", 40, key=KEY)
    stats = run_writers(s.port, ids, writers=20, seconds=30.0, key=KEY)
    assert stats.statuses == {200: stats.acked} and stats.failures == 0, stats.statuses
    assert stats.acked >= 300, f"only {stats.acked} writes in 30 s"
    assert not stats.unacked
    assert lost_writes(db_url, stats) == []


@pytest.mark.slow
def test_twenty_writers_for_30_seconds_on_sqlite_lose_nothing_and_get_no_5xx(server):
    _load(server, server.db_url)


@pytest.mark.slow
def test_twenty_writers_for_30_seconds_on_postgresql_lose_nothing_and_get_no_5xx(
        tmp_path, tiny_model_dir, fresh_postgres_url):
    s = start_server(tmp_path / "serve", [], _config(tiny_model_dir), db_url=fresh_postgres_url)
    try:
        _load(s, fresh_postgres_url)
    finally:
        assert s.stop() == 0


@pytest.mark.slow
def test_sigkill_during_writes_loses_no_acknowledged_feedback(tmp_path, tiny_model_dir):
    """On SQLite, where the server's own commits are the durability (PostgreSQL's are the
    database server's, and the load test covers its acknowledgements)."""
    db_url = f"sqlite:///{tmp_path / 'feedback.db'}"
    s = start_server(tmp_path / "serve", [], _config(tiny_model_dir), db_url=db_url)
    try:
        ids = make_responses(s.url, "tiny", 20, key=KEY)
        result = []
        writers = threading.Thread(target=lambda: result.append(
            run_writers(s.port, ids, writers=20, seconds=30.0, key=KEY, timeout=10)))
        writers.start()
        time.sleep(4)
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(30)
        writers.join(60)
    finally:
        s.stop()
    assert s.proc.returncode == -signal.SIGKILL and result
    stats = result[0]
    assert stats.acked > 20 and stats.server_errors == 0
    assert lost_writes(db_url, stats) == []
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # a new process knows the ids from the database alone; a retried key replays
    s = start_server(tmp_path / "serve-again", [], _config(tiny_model_dir), db_url=db_url)
    try:
        superseded = {(u.response_id, u.user) for u in stats.unacked}
        w = next(w for pair, w in stats.last.items() if pair not in superseded)
        status, headers, _ = _post(s, {"response_id": w.response_id, "user": w.user,
                                       "rating": w.rating, "score": w.score,
                                       **({"comment": w.comment} if w.comment else {})},
                                   **{"Idempotency-Key": w.key})
        assert status == 200 and headers.get("idempotent-replayed") == "true"
        status, _, _ = _post(s, {"response_id": ids[-1], "user": "after-restart", "rating": "up"})
        assert status == 200
    finally:
        assert s.stop() == 0
