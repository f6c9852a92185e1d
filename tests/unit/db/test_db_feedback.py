"""tunelab.db.feedback on SQLite and on a real PostgreSQL server (tests/pg.py).

Each rule of ``write_feedback`` (unknown and unanswered responses, the idempotency key,
one row per response and user with merged updates, bad values), concurrent first writes
from threads (the unique-constraint race), and ``rated_responses`` joined with the log.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from db_records import T0, make_record
from tunelab.db import (
    FeedbackInput,
    FeedbackRefused,
    open_database,
    rated_responses,
    write_feedback,
)
from tunelab.db.feedback import TEXT_LENGTH, all_feedback, get_feedback, response_status
from tunelab.db.review import mark_feedback_reviewed
from tunelab.db.tables import FeedbackRow, RequestLogRow


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fb.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    with open_database(url) as db:
        records = [make_record(i) for i in range(4)]
        records.append(make_record(4, status_code=429, answer=None))
        records.append(make_record(5, model="other", experiment="exp", variant="b"))
        with db.engine.begin() as conn:
            conn.execute(insert(RequestLogRow), [asdict(r) for r in records])
        yield db


def rid(i: int) -> str:
    return make_record(i).request_id


def test_first_write_creates_and_a_later_one_merges_into_the_same_row(db):
    first = write_feedback(db, FeedbackInput(rid(0), "ann", rating="up"), now=T0)
    assert first.outcome == "created" and first.feedback.rating == "up"
    assert first.feedback.created_at == first.feedback.updated_at == T0
    later = T0 + timedelta(seconds=5)
    second = write_feedback(db, FeedbackInput(rid(0), "ann", comment="clear", score=4), now=later)
    assert second.outcome == "updated" and second.feedback.id == first.feedback.id
    row = get_feedback(db, rid(0), "ann")
    assert row is not None and (row.rating, row.score, row.comment) == ("up", 4, "clear")
    assert row.created_at == T0 and row.updated_at == later
    # another user, and no user at all, are rows of their own
    write_feedback(db, FeedbackInput(rid(0), "bob", rating="down"))
    write_feedback(db, FeedbackInput(rid(0), score=2))
    assert sorted(f.user for f in all_feedback(db)) == ["", "ann", "bob"]


def review_of(db, feedback_id: int) -> tuple:
    with db.engine.connect() as conn:
        return tuple(conn.execute(select(FeedbackRow.review_status, FeedbackRow.review_correction,
                                         FeedbackRow.reviewed_at)
                                  .where(FeedbackRow.id == feedback_id)).one())


def test_a_changing_write_clears_the_review_and_an_identical_one_keeps_it(db):
    fid = write_feedback(db, FeedbackInput(rid(0), "ann", rating="down",
                                           correction="billing"), now=T0).feedback.id
    assert mark_feedback_reviewed(db, [(fid, "approved", "billing")]) == 1
    # the same values again (a retry without a key, or a resent form) change nothing
    write_feedback(db, FeedbackInput(rid(0), "ann", correction="billing"),
                   now=T0 + timedelta(seconds=1))
    status, correction, reviewed_at = review_of(db, fid)
    assert (status, correction) == ("approved", "billing") and reviewed_at is not None
    # the user rewrites the correction: the approval was of the old words
    write_feedback(db, FeedbackInput(rid(0), "ann", correction="delete my account"),
                   now=T0 + timedelta(seconds=2))
    assert review_of(db, fid) == (None, None, None)
    # a changed rating alone clears a rejection too
    assert mark_feedback_reviewed(db, [(fid, "rejected", None)]) == 1
    write_feedback(db, FeedbackInput(rid(0), "ann", rating="up"), now=T0 + timedelta(seconds=3))
    assert review_of(db, fid) == (None, None, None)


def test_a_retried_key_returns_the_first_row_unchanged(db):
    first = write_feedback(db, FeedbackInput(rid(1), "ann", rating="down", correction="42"),
                           idempotency_key="k-1", now=T0)
    again = write_feedback(db, FeedbackInput(rid(1), "ann", rating="down", correction="42"),
                           idempotency_key="k-1", now=T0 + timedelta(minutes=1))
    assert again.outcome == "replayed" and again.feedback == first.feedback
    assert get_feedback(db, rid(1), "ann").updated_at == T0  # nothing was written
    with pytest.raises(FeedbackRefused) as e:
        write_feedback(db, FeedbackInput(rid(1), "ann", rating="up"), idempotency_key="k-1")
    assert e.value.code == "idempotency_key_reused" and "k-1" in e.value.message
    with pytest.raises(FeedbackRefused) as e:  # the same key on another response
        write_feedback(db, FeedbackInput(rid(2), "ann", rating="down"), idempotency_key="k-1")
    assert e.value.code == "idempotency_key_reused"
    # a later write with its own key takes the row; the old key is free again
    write_feedback(db, FeedbackInput(rid(1), "ann", score=5), idempotency_key="k-2")
    assert get_feedback(db, rid(1), "ann").idempotency_key == "k-2"


def test_unknown_and_unanswered_responses_are_refused(db):
    with pytest.raises(FeedbackRefused) as e:
        write_feedback(db, FeedbackInput("chatcmpl-nope", rating="up"))
    assert e.value.code == "response_not_found" and e.value.param == "response_id"
    with pytest.raises(FeedbackRefused) as e:
        write_feedback(db, FeedbackInput(rid(4), rating="up"))  # logged with status 429
    assert e.value.code == "response_not_answered" and "429" in e.value.message
    assert all_feedback(db) == []
    assert response_status(db, rid(4)) == 429 and response_status(db, "chatcmpl-nope") is None


@pytest.mark.parametrize(("fb", "param"), [
    (FeedbackInput("x", rating="meh"), "rating"),
    (FeedbackInput("x", score=6), "score"),
    (FeedbackInput("x", score=0), "score"),
    (FeedbackInput("x", comment="a" * (TEXT_LENGTH + 1)), "comment"),
    (FeedbackInput("x", user="u" * 201, rating="up"), "user"),
    (FeedbackInput("", rating="up"), "response_id"),
    (FeedbackInput("x"), None),
    (FeedbackInput("x", correction="a\x00b"), "correction"),
])
def test_bad_values_are_refused_naming_the_field(fb, param, tmp_path):
    with open_database(f"sqlite:///{tmp_path / 'v.db'}") as db, \
            pytest.raises(FeedbackRefused) as e:
        write_feedback(db, fb)
    assert e.value.code == "invalid_value" and e.value.param == param


def test_concurrent_first_writes_make_one_row(db):
    """20 threads write the first feedback of one (response, user) at once, then 20 retry
    one key at once: one row each time, the rest updates or replays, never an error."""
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def post(i: int, key: str | None, fb: FeedbackInput) -> None:
        barrier.wait()
        try:
            outcomes.append(write_feedback(db, fb, idempotency_key=key).outcome)
        except BaseException as e:  # reported below
            errors.append(e)

    def race(make) -> None:
        outcomes.clear()
        threads = [threading.Thread(target=post, args=make(i)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors

    race(lambda i: (i, None, FeedbackInput(rid(2), "ann", score=1 + i % 5)))
    assert sorted(outcomes) == ["created"] + ["updated"] * 19
    race(lambda i: (i, "same-key", FeedbackInput(rid(3), "bob", rating="up")))
    assert sorted(outcomes) == ["created"] + ["replayed"] * 19
    rows = all_feedback(db)
    assert sorted((f.response_id, f.user) for f in rows) == [(rid(2), "ann"), (rid(3), "bob")]


def test_rated_responses_join_the_log_and_filter(db):
    write_feedback(db, FeedbackInput(rid(0), "ann", rating="up"), now=T0)
    write_feedback(db, FeedbackInput(rid(5), "ann", correction="fixed"), now=T0 + timedelta(hours=1))
    both = rated_responses(db)
    assert [r.feedback.response_id for r in both] == [rid(0), rid(5)]
    first = both[0]
    assert first.model == "tiny-run" and first.answer == "Answer 0" and "Hello 0" in first.prompt
    assert first.response_created_at == make_record(0).created_at and first.experiment is None
    exp = rated_responses(db, experiment="exp")
    assert len(exp) == 1 and (exp[0].model, exp[0].variant) == ("other", "b")
    assert [r.feedback.correction for r in rated_responses(db, model="other")] == ["fixed"]
    assert rated_responses(db, since=T0 + timedelta(minutes=30))[0].feedback.response_id == rid(5)
    assert [r.feedback.rating for r in rated_responses(db, until=T0 + timedelta(minutes=30))] == ["up"]
    assert len(rated_responses(db, limit=1)) == 1
