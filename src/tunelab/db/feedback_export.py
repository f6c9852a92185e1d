"""Read feedback with the request it is about: what `tunelab feedback export` starts from.

``feedback_with_requests`` joins each ``feedback`` row to the ``request_log`` row whose
``request_id`` is the feedback's ``response_id`` (an outer join: feedback whose request
is no longer in the log still comes back, with the request fields ``None``, so the
caller can count it instead of losing it silently). Filters are applied in SQL: by the
feedback's time, by the model that answered, and by the experiment the request named.

This module knows nothing of training data, review or the gate: it hands back rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from tunelab.db.database import Database
from tunelab.db.tables import FeedbackRow, RequestLogRow
from tunelab.errors import DatabaseError


@dataclass(frozen=True)
class FeedbackItem:
    """One feedback row and the logged request it is about.

    Attributes:
        feedback_id: the feedback row's id.
        response_id: the response the feedback names.
        user: who gave it (``""`` when the feedback named no user).
        rating, score, correction, comment: what the user said (each may be ``None``).
        created_at: when the feedback was first stored (UTC).
        found: whether the request is in the log; when not, every field below is ``None``.
        endpoint: ``chat.completions`` or ``completions``.
        model: the served model that answered.
        prompt: the request's messages as JSON (chat) or its text; ``None`` when the
            server kept no text (``log_text: false``).
        answer: the answer text; ``None`` when no text was kept.
        status_code: the HTTP status the request got.
        experiment, variant: the experiment the request named and the variant that answered.
        review_status: ``"approved"`` or ``"rejected"`` once a review project decided on the
            feedback (``tunelab review export --as feedback``); ``None`` until then.
        review_correction: the correction the review approved (the reviewers' own, else
            the user's as they saw it), which replaces the user's.
        updated_at: when the feedback was last changed (UTC).
        reviewed_at: when the review status was set (UTC); ``None`` until then. A row
            changed after it (``updated_at > reviewed_at``) was not reviewed as it reads.
    """

    feedback_id: int
    response_id: str
    user: str
    rating: str | None
    score: int | None
    correction: str | None
    comment: str | None
    created_at: datetime
    found: bool
    endpoint: str | None = None
    model: str | None = None
    prompt: str | None = None
    answer: str | None = None
    status_code: int | None = None
    experiment: str | None = None
    variant: str | None = None
    review_status: str | None = None
    review_correction: str | None = None
    updated_at: datetime | None = None
    reviewed_at: datetime | None = None


def feedback_with_requests(db: Database, since: datetime | None = None, model: str | None = None,
                           experiment: str | None = None) -> list[FeedbackItem]:
    """Every feedback row (optionally filtered) with its logged request, oldest first.

    Args:
        db: the open database.
        since: only feedback created at or after this time (aware, or naive UTC).
        model: only feedback on answers of this served model (needs the request logged).
        experiment: only feedback on requests that named this experiment.

    Returns:
        One item per feedback row, by feedback id. A response id logged twice (it should
        not be) is joined to its first row.

    Raises:
        DatabaseError: the database cannot be read.
    """
    query = (select(FeedbackRow, RequestLogRow)
             .outerjoin(RequestLogRow, RequestLogRow.request_id == FeedbackRow.response_id)
             .order_by(FeedbackRow.id, RequestLogRow.id))
    if since is not None:
        query = query.where(FeedbackRow.updated_at >= since)  # a correction added later counts
    if model is not None:
        query = query.where(RequestLogRow.model == model)
    if experiment is not None:
        query = query.where(RequestLogRow.experiment == experiment)
    items: list[FeedbackItem] = []
    seen: set[int] = set()
    try:
        with db.session() as session:
            for fb, req in session.execute(query):
                if fb.id in seen:
                    continue
                seen.add(fb.id)
                items.append(_item(fb, req))
    except DBAPIError as e:
        lines = str(e.orig).strip().splitlines()
        raise DatabaseError(f"cannot read the feedback in {db.safe_url}: "
                            f"{lines[0] if lines else type(e.orig).__name__}",
                            hint="check that the database server is running") from None
    return items


def _item(fb: FeedbackRow, req: RequestLogRow | None) -> FeedbackItem:
    base = dict(feedback_id=fb.id, response_id=fb.response_id, user=fb.user, rating=fb.rating,
                score=fb.score, correction=fb.correction, comment=fb.comment,
                created_at=fb.created_at, review_status=fb.review_status,
                review_correction=fb.review_correction, updated_at=fb.updated_at,
                reviewed_at=fb.reviewed_at)
    if req is None:
        return FeedbackItem(**base, found=False)
    return FeedbackItem(**base, found=True, endpoint=req.endpoint, model=req.model,
                        prompt=req.prompt, answer=req.answer, status_code=req.status_code,
                        experiment=req.experiment, variant=req.variant)
