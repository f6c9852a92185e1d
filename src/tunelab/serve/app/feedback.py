"""``POST /v1/feedback``: what a user says about a response, stored before it is acknowledged.

The body is ``{"response_id", "rating": "up"|"down", "score": 1..5, "correction",
"comment", "user"}`` with at least one of rating, score, correction and comment, and
nothing else (an unknown field is refused, naming it: a typo must not drop a rating in
silence). An ``Idempotency-Key`` header makes a retry safe. Answers:

* 200 ``{"id": "fb-<n>", "object": "feedback", "response_id", "created"}`` once the
  row is committed (``tunelab.db.feedback``: its own transaction, durable on return);
  a replayed key answers the first row again, with ``Idempotent-Replayed: true``;
* 404 ``response_not_found``: no response with that id was answered here;
* 422 for a value that cannot be stored, the field named in ``param``; also
  ``response_not_answered`` (the request behind the id was refused or failed: there is
  no answer to judge) and ``idempotency_key_reused`` (the key came with another body);
* 400 for a body that is not JSON, 401/413 from the key check and the body cap every
  route passes, 503 when the database cannot be written (with ``Retry-After``).

The request log is written about once a second, off the request path, so a response
answered a moment ago may not be in the database yet. ``RecentResponses`` sits in front
of the log writer and remembers the status of the last ``RECENT`` responses this process
answered; feedback on one of those that the log does not hold yet waits (without holding
a thread) until the writer has committed it, up to ``LOG_WAIT_SECONDS``. Waiting, rather
than storing the feedback at once, keeps every feedback row joined to its logged
response even when the process is killed before the log's next flush. After a restart
the map is empty and the database alone says which ids exist.

This module knows nothing of models or the engine.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool

from tunelab.db import NAME_LENGTH, Database, FeedbackInput, FeedbackRefused, RequestRecord
from tunelab.db.feedback import (
    ANSWERED,
    SCORE_MAX,
    SCORE_MIN,
    TEXT_LENGTH,
    FeedbackWrite,
    response_status,
    write_feedback,
)
from tunelab.db.tables import ID_LENGTH
from tunelab.errors import DatabaseError
from tunelab.serve.app.errors import INVALID_REQUEST, NOT_FOUND, UNAVAILABLE, APIError
from tunelab.serve.app.metrics import ServeMetrics

log = logging.getLogger(__name__)

RECENT = 50_000  # responses remembered: minutes of traffic at hundreds per second, ~10 MB
LOG_WAIT_SECONDS = 5.0  # the log writer commits at least every second; this covers a slow one
# an id this process never answered: wait this long for another server's log before 404
OTHER_SERVER_WAIT_SECONDS = 2.5
_POLL_SECONDS = 0.05
IDEMPOTENCY_HEADER = "Idempotency-Key"
_FIELDS = ("response_id", "rating", "score", "correction", "comment", "user")


class FeedbackBody(BaseModel):
    """The JSON body of ``POST /v1/feedback``."""

    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=ID_LENGTH)
    rating: Literal["up", "down"] | None = None
    score: StrictInt | None = Field(None, ge=SCORE_MIN, le=SCORE_MAX)  # "4" or 4.5: refused
    correction: str | None = Field(None, max_length=TEXT_LENGTH)
    comment: str | None = Field(None, max_length=TEXT_LENGTH)
    user: str | None = Field(None, max_length=NAME_LENGTH)

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackBody:
        if all(v is None for v in (self.rating, self.score, self.correction, self.comment)):
            raise ValueError("the feedback says nothing: give at least one of rating, score, "
                             "correction, comment")
        return self

    def to_input(self) -> FeedbackInput:
        return FeedbackInput(self.response_id, self.user or "", self.rating, self.score,
                             self.correction, self.comment)


class RecentResponses:
    """The request log writer, remembering the status of each response it is handed.

    Args:
        writer: the log writer it forwards every record to (``LogWriter``).
        size: responses remembered at most (the oldest are forgotten first).
    """

    def __init__(self, writer: Any, size: int = RECENT) -> None:
        self.writer = writer
        self.size = size
        self._status: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()  # written on the event loop, read from threads

    def write(self, record: RequestRecord) -> None:
        with self._lock:
            self._status[record.request_id] = record.status_code
            if len(self._status) > self.size:
                self._status.popitem(last=False)
        self.writer.write(record)

    def flush_soon(self) -> None:
        """Ask the log writer to commit now (a feedback waits for its response's row)."""
        # a writer without it (a test double of the log) commits on its own schedule
        flush = getattr(self.writer, "flush_soon", None)
        if flush is not None:
            flush()

    def status(self, response_id: str) -> int | None:
        """The status this process answered ``response_id`` with; None if not recent."""
        with self._lock:
            return self._status.get(response_id)


def add_feedback_route(app: FastAPI, db: Database | None, recent: RecentResponses | None,
                       metrics: ServeMetrics) -> None:
    """Register ``POST /v1/feedback`` on ``app``.

    Args:
        app: the server app (its key check and body cap apply to this route too).
        db: where feedback is stored; None: the route answers 503.
        recent: the responses this process answered lately (None: none are known).
        metrics: counts ``tunelab_feedback_total{model,kind}``.
    """

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        body = _parse(await request.body())
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not 0 < len(key) <= ID_LENGTH:
            raise APIError(422, f"{IDEMPOTENCY_HEADER}: must be 1 to {ID_LENGTH} characters",
                           param=IDEMPOTENCY_HEADER, code="invalid_value")
        if db is None:
            raise APIError(503, "this server keeps no database, so it cannot store feedback",
                           UNAVAILABLE, code="no_database")
        fb = body.to_input()
        done = await _write_waiting_for_the_log(db, recent, fb, key)
        if done.outcome != "replayed":
            for kind in _kinds(fb):
                metrics.feedback.labels(model=done.model, kind=kind).inc()
        row = done.feedback
        headers = {"Idempotent-Replayed": "true"} if done.outcome == "replayed" else None
        return JSONResponse({"id": f"fb-{row.id}", "object": "feedback",
                             "response_id": row.response_id,
                             "created": int(row.created_at.timestamp())}, headers=headers)


async def _write_waiting_for_the_log(db: Database, recent: RecentResponses | None,
                                     fb: FeedbackInput, key: str | None) -> FeedbackWrite:
    try:
        return await run_in_threadpool(_write, db, fb, key)
    except FeedbackRefused as e:
        if e.code != "response_not_found":
            raise _refused(e) from None
        known = recent.status(fb.response_id) if recent is not None else None
        if known is None:
            # Not answered here: another server on the same database may have answered it
            # a moment ago, and its log writer commits about once a second.
            return await _wait_for_another_server(db, fb, key, e)
        if known != ANSWERED:
            raise APIError(422, f"the response {fb.response_id!r} was not answered (status "
                                f"{known}); only answered responses take feedback",
                           param="response_id", code="response_not_answered") from None
    # Answered here a moment ago; the log writer has not committed it yet: ask it to now.
    assert recent is not None  # known is None without it
    recent.flush_soon()
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(_POLL_SECONDS)
        if await run_in_threadpool(_status, db, fb.response_id) is not None:
            try:
                return await run_in_threadpool(_write, db, fb, key)
            except FeedbackRefused as e:
                raise _refused(e) from None
    raise APIError(503, f"the response {fb.response_id!r} is not in the request log yet "
                        f"{LOG_WAIT_SECONDS:.0f} s after it was answered (a slow or "
                        "unreachable database); retry later", UNAVAILABLE,
                   code="log_behind", retry_after=LOG_WAIT_SECONDS)


async def _wait_for_another_server(db: Database, fb: FeedbackInput, key: str | None,
                                   refused: FeedbackRefused) -> FeedbackWrite:
    deadline = time.monotonic() + OTHER_SERVER_WAIT_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(_POLL_SECONDS * 4)
        if await run_in_threadpool(_status, db, fb.response_id) is not None:
            try:
                return await run_in_threadpool(_write, db, fb, key)
            except FeedbackRefused as e:
                raise _refused(e) from None
    raise _refused(refused)


def _write(db: Database, fb: FeedbackInput, key: str | None) -> FeedbackWrite:
    try:
        return write_feedback(db, fb, idempotency_key=key)
    except DatabaseError as e:
        raise _unavailable(e) from None


def _status(db: Database, response_id: str) -> int | None:
    try:
        return response_status(db, response_id)
    except DatabaseError as e:
        raise _unavailable(e) from None


def _unavailable(e: DatabaseError) -> APIError:
    # the client learns only that the database is unavailable; where it is and the
    # driver's reason (the URL without its password) go to the operator's log
    log.warning("feedback not stored: %s", e.message)
    return APIError(503, "feedback not stored: the database is unavailable; retry later",
                    UNAVAILABLE, code="database_unavailable", retry_after=1)


def _refused(e: FeedbackRefused) -> APIError:
    if e.code == "response_not_found":
        return APIError(404, e.message, NOT_FOUND, param=e.param, code=e.code)
    return APIError(422, e.message, INVALID_REQUEST, param=e.param, code=e.code)


def _parse(raw: bytes) -> FeedbackBody:
    try:
        return FeedbackBody.model_validate_json(raw)
    except ValidationError as e:
        errors = e.errors()
        first = errors[0]
        kind = first.get("type")
        if kind == "json_invalid":
            raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
        loc = [str(p) for p in first.get("loc", ())]
        param = ".".join(loc) or None
        if kind == "model_type":
            msg = "the body must be a JSON object"
        elif kind == "extra_forbidden":
            msg = f"unknown field; the fields are {', '.join(_FIELDS)}"
        elif kind == "missing":
            msg = "required but missing"
        else:
            msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise APIError(422, f"{param + ': ' if param else ''}{msg}{more}", param=param,
                       code="invalid_value") from None


def _kinds(fb: FeedbackInput) -> list[str]:
    """The metric's ``kind`` labels of one feedback: up, down, score, correction, comment."""
    kinds = [fb.rating] if fb.rating is not None else []
    return kinds + [k for k in ("score", "correction", "comment") if getattr(fb, k) is not None]
