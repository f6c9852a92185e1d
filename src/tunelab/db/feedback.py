"""Feedback on served responses: one durable write per call, and reads joined with the log.

``write_feedback`` stores what one user said about one response (``response_id`` is the
``request_id`` of a ``request_log`` row) in a transaction of its own, and returns only
after the commit: on SQLite that is WAL with ``synchronous=FULL`` (``tunelab.db.database``),
on PostgreSQL the default ``synchronous_commit=on``, so an acknowledged write survives a
killed process. The rules, in the order they are checked:

1. The response must be in the request log with status 200; otherwise
   ``FeedbackRefused`` with code ``response_not_found`` (no such row) or
   ``response_not_answered`` (the request was refused or failed: its client never got
   an answer to judge).
2. An ``idempotency_key`` that is already on a row replays that write: when the row is
   the same response and user and holds every value the call gives, the row is
   returned unchanged (outcome ``replayed``, nothing written); otherwise the key was
   reused for another body: ``FeedbackRefused`` code ``idempotency_key_reused`` (the
   IETF Idempotency-Key draft's 422). A key stays on a row while the row's last write
   was the one that carried it; a later write moves the row to its own key (or none).
3. There is one row per (response, user) (``user`` ``""`` when none is given): the first
   write inserts it (``created``); a later one sets the fields it gives and keeps those
   it leaves out (a thumbs-up, then a comment, make one row with both), and moves
   ``updated_at`` (``updated``). A write that changes a value also clears the row's
   review (``review_status``, ``review_correction``, ``reviewed_at``): the reviewers
   judged the old words, not the new ones; a write that changes nothing keeps it. Two first writes racing each other: the loser's insert
   hits the unique constraint and is retried, and becomes the update.

On SQLite the transaction begins ``IMMEDIATE`` (it takes the write lock first, so a
read-then-write never fails on a stale snapshot), and the threads of one process take
turns on a lock of their own before it: SQLite's busy handler makes a waiting writer
sleep and poll (up to 100 ms a nap), so 20 threads contending for the file lock left
some waiting seconds (p99 about 2 s against 4 ms at the median); a thread lock hands
over at once. PostgreSQL relies on the unique constraints and the retry.

``rated_responses`` reads feedback joined with its request-log row (prompt, answer,
model, experiment, variant), filtered by time, model and experiment: what the
experiment report, the monitor and the feedback export read.

This module knows nothing of HTTP: callers hand it values, it stores and reads rows.
A response the server answered a moment ago may not be in the log yet (the log writer
commits about once a second); waiting for it is the caller's business.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Literal

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from tunelab.db.database import Database, write_transaction
from tunelab.db.tables import ID_LENGTH, NAME_LENGTH, FeedbackRow, RequestLogRow
from tunelab.errors import DatabaseError, UsageError

RATINGS = ("up", "down")
SCORE_MIN, SCORE_MAX = 1, 5
TEXT_LENGTH = 20_000  # characters of a correction or a comment (a long answer fits)
ANSWERED = 200  # the only request-log status a response can take feedback for
_ATTEMPTS = 5  # unique-constraint races retried; each retry sees the winner's commit
_VALUES = ("rating", "score", "correction", "comment")

Outcome = Literal["created", "updated", "replayed"]


class FeedbackRefused(UsageError):
    """A feedback the caller must change before it can be stored.

    Attributes:
        code: ``response_not_found``, ``response_not_answered``, ``idempotency_key_reused``
            or ``invalid_value``.
        param: the field at fault (``response_id``, ``score``, ...), if one is.
    """

    def __init__(self, message: str, code: str, param: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.param = param


@dataclass(frozen=True)
class FeedbackInput:
    """What one user says about one response; at least one of the four values is set.

    Attributes:
        response_id: the response's id as the client saw it (``chatcmpl-...``).
        user: who says it; ``""`` for nobody in particular.
        rating: ``"up"`` or ``"down"``.
        score: 1 to 5.
        correction: the answer that would have been right.
        comment: free text.
    """

    response_id: str
    user: str = ""
    rating: str | None = None
    score: int | None = None
    correction: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class Feedback:
    """One stored row of ``feedback``; times are aware UTC."""

    id: int
    response_id: str
    user: str
    idempotency_key: str | None
    rating: str | None
    score: int | None
    correction: str | None
    comment: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class FeedbackWrite:
    """What ``write_feedback`` did: the row as stored, ``created``/``updated``/``replayed``,
    and the served model that answered the response (from the request log)."""

    feedback: Feedback
    outcome: Outcome
    model: str


@dataclass(frozen=True)
class RatedResponse:
    """One feedback row with the response it is about (its ``request_log`` row).

    Attributes:
        feedback: the feedback row.
        model: the served model that answered.
        experiment: the experiment the request named, if any.
        variant: the experiment's variant that answered.
        endpoint: ``chat.completions`` or ``completions``.
        prompt: the messages as JSON or the completion text; None when not logged.
        answer: the answer text; None when not logged.
        response_created_at: when the request arrived (aware UTC).
        latency_ms: the response's latency.
    """

    feedback: Feedback
    model: str
    experiment: str | None
    variant: str | None
    endpoint: str
    prompt: str | None
    answer: str | None
    response_created_at: datetime
    latency_ms: float


def check_feedback(fb: FeedbackInput, idempotency_key: str | None = None) -> None:
    """Refuse values that cannot be stored; the HTTP route checks the same, earlier.

    Raises:
        FeedbackRefused: code ``invalid_value``, naming the field.
    """
    def bad(param: str, why: str) -> FeedbackRefused:
        return FeedbackRefused(f"{param}: {why}", "invalid_value", param)

    if not fb.response_id or len(fb.response_id) > ID_LENGTH:
        raise bad("response_id", f"must be 1 to {ID_LENGTH} characters")
    if len(fb.user) > NAME_LENGTH:
        raise bad("user", f"is {len(fb.user)} characters; at most {NAME_LENGTH}")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= ID_LENGTH:
        raise bad("idempotency_key", f"must be 1 to {ID_LENGTH} characters")
    if fb.rating is not None and fb.rating not in RATINGS:
        raise bad("rating", f"is {fb.rating!r}; must be 'up' or 'down'")
    if fb.score is not None and not (isinstance(fb.score, int) and not isinstance(fb.score, bool)
                                     and SCORE_MIN <= fb.score <= SCORE_MAX):
        raise bad("score", f"is {fb.score!r}; must be a whole number {SCORE_MIN} to {SCORE_MAX}")
    for name in ("correction", "comment"):
        value = getattr(fb, name)
        if value is not None and len(value) > TEXT_LENGTH:
            raise bad(name, f"is {len(value)} characters; at most {TEXT_LENGTH}")
    texts = {"response_id": fb.response_id, "user": fb.user, "correction": fb.correction,
             "comment": fb.comment, "idempotency_key": idempotency_key}
    for name, value in texts.items():
        if value is not None and "\x00" in value:  # PostgreSQL text cannot hold it
            raise bad(name, "holds a NUL character (\\u0000), which cannot be stored")
    if all(getattr(fb, name) is None for name in _VALUES):
        raise FeedbackRefused("the feedback says nothing: give at least one of rating, score, "
                              "correction, comment", "invalid_value")


def write_feedback(db: Database, fb: FeedbackInput, idempotency_key: str | None = None,
                   now: datetime | None = None) -> FeedbackWrite:
    """Store one feedback (the module docstring has the rules); returns after the commit.

    Args:
        db: the open database.
        fb: the feedback.
        idempotency_key: the client's key for this write, if it sent one.
        now: the write's time (aware; default: now, UTC).

    Returns:
        The row as stored and what happened to it.

    Raises:
        FeedbackRefused: a bad value, an unknown or unanswered response, a reused key.
        DatabaseError: the database cannot be reached or written (nothing was stored).
    """
    check_feedback(fb, idempotency_key)
    when = now or datetime.now(timezone.utc)
    for attempt in range(_ATTEMPTS):
        try:
            with write_transaction(db) as conn:
                return _write_once(conn, fb, idempotency_key, when)
        except IntegrityError:
            # A concurrent write took the (response, user) pair or the key first; its
            # row is committed now, and the next attempt updates or replays it.
            if attempt == _ATTEMPTS - 1:
                raise DatabaseError(f"feedback on {fb.response_id!r} lost {_ATTEMPTS} races "
                                    "in a row with concurrent writes",
                                    hint="retry the request") from None
            time.sleep(0.001 * (attempt + 1))
        except DBAPIError as e:
            raise _database_error(db, "write feedback to", e) from None
    raise AssertionError("not reached")


def response_status(db: Database, response_id: str) -> int | None:
    """The status the request log holds for ``response_id``; None when it has no row (yet).

    Raises:
        DatabaseError: the database cannot be read.
    """
    try:
        with db.engine.connect() as conn:
            return _status(conn, response_id)
    except DBAPIError as e:
        raise _database_error(db, "read the request log in", e) from None


def get_feedback(db: Database, response_id: str, user: str = "") -> Feedback | None:
    """The feedback row of one response and user, or None.

    Raises:
        DatabaseError: the database cannot be read.
    """
    try:
        with db.engine.connect() as conn:
            row = conn.execute(select(FeedbackRow).where(
                FeedbackRow.response_id == response_id, FeedbackRow.user == user)).first()
    except DBAPIError as e:
        raise _database_error(db, "read feedback from", e) from None
    return None if row is None else _feedback(row)


def all_feedback(db: Database) -> list[Feedback]:
    """Every feedback row, oldest first (by id); for tests and small exports.

    Raises:
        DatabaseError: the database cannot be read.
    """
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(select(FeedbackRow).order_by(FeedbackRow.id)).all()
    except DBAPIError as e:
        raise _database_error(db, "read feedback from", e) from None
    return [_feedback(r) for r in rows]


def rated_responses(db: Database, since: datetime | None = None, until: datetime | None = None,
                    model: str | None = None, experiment: str | None = None,
                    limit: int | None = None) -> list[RatedResponse]:
    """Feedback joined with the responses it is about, oldest feedback first.

    Only feedback whose response is in the request log is returned (``write_feedback``
    stores no other).

    Args:
        db: the open database.
        since: only feedback last changed (``updated_at``) at or after this time.
        until: only feedback last changed before this time.
        model: only responses of this served model.
        experiment: only responses to requests that named this experiment.
        limit: rows at most (the oldest ones).

    Returns:
        One ``RatedResponse`` per feedback row.

    Raises:
        DatabaseError: the database cannot be read.
    """
    f, r = FeedbackRow, RequestLogRow
    query = (select(f, r.model, r.experiment, r.variant, r.endpoint, r.prompt, r.answer,
                    r.created_at, r.latency_ms)
             .join(r, r.request_id == f.response_id).order_by(f.id))
    if since is not None:
        query = query.where(f.updated_at >= since)
    if until is not None:
        query = query.where(f.updated_at < until)
    if model is not None:
        query = query.where(r.model == model)
    if experiment is not None:
        query = query.where(r.experiment == experiment)
    if limit is not None:
        query = query.limit(limit)
    try:
        with db.session() as session:
            rows = session.execute(query).all()
    except DBAPIError as e:
        raise _database_error(db, "read feedback from", e) from None
    return [RatedResponse(_feedback(row[0]), *row[1:]) for row in rows]


# --- the write -------------------------------------------------------------------------

def _write_once(conn: Connection, fb: FeedbackInput, key: str | None, when: datetime
                ) -> FeedbackWrite:
    logged = conn.execute(select(RequestLogRow.status_code, RequestLogRow.model)
                          .where(RequestLogRow.request_id == fb.response_id).limit(1)).first()
    status, model = (None, "") if logged is None else tuple(logged)
    if status is None:
        raise FeedbackRefused(f"no response {fb.response_id!r} in the request log",
                              "response_not_found", "response_id",
                              hint="send the id of a response this server answered "
                                   "(the `id` of its chat or completion)")
    if status != ANSWERED:
        raise FeedbackRefused(f"the response {fb.response_id!r} was not answered (status "
                              f"{status}); only answered responses take feedback",
                              "response_not_answered", "response_id")
    given = {name: getattr(fb, name) for name in _VALUES if getattr(fb, name) is not None}
    mine = conn.execute(select(FeedbackRow).where(
        FeedbackRow.response_id == fb.response_id, FeedbackRow.user == fb.user)).first()
    keyed = None
    if key is not None:
        # the row of this response and user counts too: on PostgreSQL (read committed) a
        # concurrent retry's row can appear between two statements of this transaction
        keyed = mine if mine is not None and mine.idempotency_key == key else conn.execute(
            select(FeedbackRow).where(FeedbackRow.idempotency_key == key)).first()
    if keyed is not None:
        same = (keyed.response_id == fb.response_id and keyed.user == fb.user
                and all(getattr(keyed, k) == v for k, v in given.items()))
        if not same:
            raise FeedbackRefused(
                f"the Idempotency-Key {key!r} was used for another feedback",
                "idempotency_key_reused", "Idempotency-Key",
                hint="send a new key for a new feedback; reuse a key only to retry "
                     "the same request")
        return FeedbackWrite(_feedback(keyed), "replayed", model)
    if mine is None:
        new_id = conn.execute(insert(FeedbackRow).values(
            response_id=fb.response_id, user=fb.user, idempotency_key=key, created_at=when,
            updated_at=when, **given).returning(FeedbackRow.id)).scalar_one()
        outcome: Outcome = "created"
    else:
        new_id = mine.id
        changed = any(getattr(mine, k) != v for k, v in given.items())
        # a review approved or rejected what the row said then; once it says something
        # else, that decision is about other words and must not carry over
        unreviewed = ({"review_status": None, "review_correction": None, "reviewed_at": None}
                      if changed else {})
        conn.execute(update(FeedbackRow).where(FeedbackRow.id == new_id)
                     .values(idempotency_key=key, updated_at=when, **given, **unreviewed))
        outcome = "updated"
    row = conn.execute(select(FeedbackRow).where(FeedbackRow.id == new_id)).one()
    return FeedbackWrite(_feedback(row), outcome, model)


def _status(conn: Connection, response_id: str) -> int | None:
    return conn.execute(select(RequestLogRow.status_code)
                        .where(RequestLogRow.request_id == response_id).limit(1)).scalar()


_FIELDS = [f.name for f in fields(Feedback)]


def _feedback(row: object) -> Feedback:
    return Feedback(**{name: getattr(row, name) for name in _FIELDS})


def _database_error(db: Database, doing: str, e: DBAPIError) -> DatabaseError:
    """The driver's first line (never the statement or its parameters: they hold text)."""
    lines = str(e.orig).strip().splitlines()
    reason = lines[0] if lines else type(e.orig).__name__
    return DatabaseError(f"cannot {doing} the database {db.safe_url}: {reason}",
                         hint="check that the database server is running and writable; "
                              "retry the request")
