"""tunelab.db.monitor_rows: traffic per model and bucket, feedback joined per response, prompts;
the same numbers from SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from db_records import make_record
from tunelab.db import RequestLogWriter, open_database
from tunelab.db.monitor_rows import (
    bucket_for,
    bucket_start,
    logged_models,
    production_prompts,
    rows_without_text,
    totals,
    traffic,
)
from tunelab.db.tables import FeedbackRow

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}" if request.param == "sqlite" else \
        request.getfixturevalue("fresh_postgres_url")
    db = open_database(url)
    writer = RequestLogWriter(db)
    writer.start()
    # model a: 10 requests at 10:00-10:09 (two 429s), 5 at 11:30-11:34; model b: 3 at 10:05
    for i in range(10):
        writer.write(make_record(i, model="a", created_at=T0 + timedelta(minutes=i),
                                 latency_ms=float(10 * (i + 1)),
                                 status_code=429 if i in (3, 7) else 200))
    for i in range(10, 15):
        writer.write(make_record(i, model="a", created_at=T0 + timedelta(minutes=80 + i),
                                 latency_ms=5.0, prompt=None if i == 14 else f"p{i}"))
    for i in range(15, 18):
        writer.write(make_record(i, model="b", created_at=T0 + timedelta(minutes=5)))
    writer.close()
    with db.session() as s:  # two users rate response 0; one rates response 1 and scores it
        for rid, user, rating, score in [(0, "u1", "up", None), (0, "u2", "down", 2),
                                         (1, "", "up", 4), (11, "", None, 5)]:
            s.add(FeedbackRow(response_id=f"chatcmpl-{rid:06d}", user=user, rating=rating,
                              score=score, created_at=T0, updated_at=T0))
    yield db
    db.close()


def test_buckets_are_hours_up_to_three_days_then_days():
    assert bucket_for(T0, T0 + timedelta(days=3)) == "hour"
    assert bucket_for(T0, T0 + timedelta(days=3, seconds=1)) == "day"
    t = datetime(2026, 3, 1, 13, 45, 12, tzinfo=timezone.utc)
    assert bucket_start(t, "hour") == datetime(2026, 3, 1, 13, tzinfo=timezone.utc)
    assert bucket_start(t, "day") == datetime(2026, 3, 1, tzinfo=timezone.utc)


def test_traffic_per_model_and_hour_with_errors_latency_and_feedback(db):
    rows = traffic(db, T0, T0 + timedelta(hours=3), "hour")
    assert [(b.model, b.start.hour, b.requests) for b in rows] == [
        ("a", 10, 10), ("a", 11, 5), ("b", 10, 3)]
    a10 = rows[0]
    assert a10.errors == 2
    ok = [10.0 * (i + 1) for i in range(10) if i not in (3, 7)]  # 429s are not latencies
    assert a10.latency_p50_ms == pytest.approx(sorted(ok)[3] / 2 + sorted(ok)[4] / 2)
    assert a10.latency_p99_ms == pytest.approx(99.3)  # numpy's linear percentile of `ok`
    # two feedback rows on response 0 count once as a request, twice as feedback
    assert a10.feedback == 3 and a10.ratings == 3
    assert a10.up_rate == pytest.approx(2 / 3) and a10.mean_score == pytest.approx(3.0)
    a11 = rows[1]
    assert a11.feedback == 1 and a11.ratings == 0 and a11.up_rate is None
    assert a11.mean_score == 5.0 and a11.errors == 0
    assert rows[2].feedback == 0 and rows[2].up_rate is None and rows[2].mean_score is None
    only_b = traffic(db, T0, T0 + timedelta(hours=3), "day", model="b")
    assert [(b.model, b.start.hour, b.requests) for b in only_b] == [("b", 0, 3)]


def test_the_span_includes_its_start_and_excludes_its_end(db):
    rows = traffic(db, T0 + timedelta(minutes=1), T0 + timedelta(minutes=9), "hour", "a")
    assert rows[0].requests == 8  # minutes 1..8


def test_totals_per_model(db):
    t = totals(db, T0, T0 + timedelta(hours=3))
    assert sorted(t) == ["a", "b"] and t["a"].requests == 15 and t["a"].ratings == 3


def test_production_prompts_are_the_newest_answered_with_text_oldest_first(db):
    got = production_prompts(db, "a", T0, limit=100)
    assert len(got) == 12  # 15 rows, less two refused and one without text
    assert got[-1][0] == "p13" and got[0][1] == "Answer 0"
    newest = production_prompts(db, "a", T0, limit=3)
    assert [p for p, _ in newest] == ["p11", "p12", "p13"]
    assert production_prompts(db, "a", T0 + timedelta(hours=5), limit=10) == []
    assert rows_without_text(db, "a", T0) == 1
    assert logged_models(db, T0) == ["a", "b"]
    assert logged_models(db, T0 + timedelta(hours=1)) == ["a"]
