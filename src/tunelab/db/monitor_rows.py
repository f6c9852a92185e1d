"""What `tunelab monitor` reads from the request log: traffic over time, and production prompts.

``traffic`` groups the log per model and per time bucket (an hour or a day,
``bucket_for``): requests, errors (status other than 200), latency percentiles of the
answered requests, and the feedback on them, joined as ``request_log.request_id =
feedback.response_id`` (feedback counts in the bucket of the response it rates).
Percentiles are computed here, not in SQL: SQLite has no percentile function, and both
backends then agree to the millisecond. ``production_prompts`` returns the newest logged
prompts of one model (with their answers) since a time; ``logged_models`` the models
that have rows.

This module knows nothing of models or of drift: it returns numbers, times and texts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import Select, case, func, select
from sqlalchemy.exc import DBAPIError

from tunelab.db.database import Database
from tunelab.db.tables import FeedbackRow, RequestLogRow
from tunelab.errors import DatabaseError

HOURLY_SPAN = timedelta(days=3)  # spans up to this are shown per hour, longer ones per day
OK_STATUS = 200


@dataclass(frozen=True)
class TrafficBucket:
    """One model's requests in one time bucket."""

    model: str
    start: datetime  # UTC, the bucket's first instant
    requests: int
    errors: int  # status other than 200
    latency_p50_ms: float | None  # answered (200) requests only; None when there were none
    latency_p99_ms: float | None
    feedback: int  # feedback rows on this bucket's responses
    ratings: int  # of them, those with an up/down rating
    up_rate: float | None  # "up" among ratings; None without ratings
    mean_score: float | None  # 1-5; None without scores

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "start": self.start.isoformat(), "requests": self.requests,
                "errors": self.errors, "latency_p50_ms": self.latency_p50_ms,
                "latency_p99_ms": self.latency_p99_ms, "feedback": self.feedback,
                "ratings": self.ratings, "up_rate": self.up_rate, "mean_score": self.mean_score}


def bucket_for(since: datetime, until: datetime) -> str:
    """``"hour"`` for a span up to ``HOURLY_SPAN``, else ``"day"``."""
    return "hour" if until - since <= HOURLY_SPAN else "day"


def bucket_start(t: datetime, bucket: str) -> datetime:
    """The start of the hour or the UTC day holding ``t``."""
    t = t.astimezone(timezone.utc)
    t = t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0) if bucket == "day" else t


def _read(db: Database, query: Select) -> list[Any]:
    try:
        with db.session() as session:
            return list(session.execute(query).all())
    except DBAPIError as e:
        lines = str(e.orig).strip().splitlines()
        raise DatabaseError(f"cannot read the request log in {db.safe_url}: "
                            f"{lines[0] if lines else type(e.orig).__name__}",
                            hint="check that the database server is running") from None


def _feedback_per_response() -> Any:
    """Feedback summed per response id (a response may have one row per user)."""
    up = case((FeedbackRow.rating == "up", 1), else_=0)
    rated = case((FeedbackRow.rating.is_not(None), 1), else_=0)
    scored = case((FeedbackRow.score.is_not(None), 1), else_=0)
    return (select(FeedbackRow.response_id.label("response_id"),
                   func.count().label("n"), func.sum(up).label("up"),
                   func.sum(rated).label("rated"),
                   func.sum(func.coalesce(FeedbackRow.score, 0)).label("score_sum"),
                   func.sum(scored).label("scored"))
            .group_by(FeedbackRow.response_id).subquery())


def _request_rows(db: Database, since: datetime, until: datetime, model: str | None) -> list[Any]:
    fb = _feedback_per_response()
    r = RequestLogRow
    query = (select(r.model, r.created_at, r.status_code, r.latency_ms, fb.c.n, fb.c.up,
                    fb.c.rated, fb.c.score_sum, fb.c.scored)
             .outerjoin(fb, fb.c.response_id == r.request_id)
             .where(r.created_at >= since, r.created_at < until))
    if model is not None:
        query = query.where(r.model == model)
    return _read(db, query)


def _summary(name: str, start: datetime, rows: list[Any]) -> TrafficBucket:
    ok = np.array([x.latency_ms for x in rows if x.status_code == OK_STATUS], dtype=float)
    rated = sum(int(x.rated or 0) for x in rows)
    scored = sum(int(x.scored or 0) for x in rows)
    return TrafficBucket(
        name, start, len(rows), sum(x.status_code != OK_STATUS for x in rows),
        float(np.percentile(ok, 50)) if ok.size else None,
        float(np.percentile(ok, 99)) if ok.size else None,
        sum(int(x.n or 0) for x in rows), rated,
        sum(int(x.up or 0) for x in rows) / rated if rated else None,
        sum(int(x.score_sum or 0) for x in rows) / scored if scored else None)


def traffic(db: Database, since: datetime, until: datetime, bucket: str,
            model: str | None = None) -> list[TrafficBucket]:
    """Requests, errors, latency and feedback per model and bucket, oldest bucket first.

    Args:
        db: the open database.
        since, until: the time span (aware, or naive UTC); rows at ``since`` count.
        bucket: ``"hour"`` or ``"day"`` (``bucket_for``).
        model: one model's rows only; None: every model.

    Raises:
        DatabaseError: the database cannot be read.
    """
    groups: dict[tuple[str, datetime], list[Any]] = defaultdict(list)
    for row in _request_rows(db, since, until, model):
        groups[(row.model, bucket_start(row.created_at, bucket))].append(row)
    return [_summary(name, start, rows) for (name, start), rows in sorted(groups.items())]


def totals(db: Database, since: datetime, until: datetime) -> dict[str, TrafficBucket]:
    """The same numbers over the whole span, per model (``start`` is ``since``).

    Raises:
        DatabaseError: the database cannot be read.
    """
    groups: dict[str, list[Any]] = defaultdict(list)
    for row in _request_rows(db, since, until, None):
        groups[row.model].append(row)
    return {name: _summary(name, since, rows) for name, rows in sorted(groups.items())}


def logged_models(db: Database, since: datetime) -> list[str]:
    """The models that have request-log rows since ``since``, sorted.

    Raises:
        DatabaseError: the database cannot be read.
    """
    query = select(RequestLogRow.model).where(RequestLogRow.created_at >= since).distinct()
    return sorted(row.model for row in _read(db, query))


def production_prompts(db: Database, model: str, since: datetime, limit: int
                       ) -> list[tuple[str, str | None]]:
    """The newest answered prompts of one model since a time, with their answers, oldest first.

    Rows without text (a server with ``log_text: false``) and refused requests are left out.

    Args:
        db: the open database.
        model: the served name in the log.
        since: rows at or after this time.
        limit: the newest this many at most.

    Raises:
        DatabaseError: the database cannot be read.
    """
    r = RequestLogRow
    query = (select(r.prompt, r.answer)
             .where(r.model == model, r.created_at >= since, r.status_code == OK_STATUS,
                    r.prompt.is_not(None))
             .order_by(r.id.desc()).limit(limit))
    return [(row.prompt, row.answer) for row in reversed(_read(db, query))]


def rows_without_text(db: Database, model: str, since: datetime) -> int:
    """Answered requests of a model since a time whose prompt was not kept (``log_text: false``).

    Raises:
        DatabaseError: the database cannot be read.
    """
    r = RequestLogRow
    query = select(func.count()).where(r.model == model, r.created_at >= since,
                                       r.status_code == OK_STATUS, r.prompt.is_(None))
    return int(_read(db, query)[0][0])
