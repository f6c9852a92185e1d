"""Reading one experiment back from the database: its requests, their feedback, its units.

``experiment_rows`` returns the requests the log holds for an experiment (those with a
variant), the feedback given on them (``feedback.response_id = request_log.request_id``;
read with an inner join, so a request with several feedback rows is not counted twice
among the requests), and the units per variant from ``experiment_assignment``.
``experiment_names`` lists the experiments the log knows, for error messages.

This module knows nothing of statistics or of the serve config: it returns rows as
plain values, and the caller decides what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from tunelab.db.database import Database
from tunelab.db.tables import ExperimentAssignmentRow, FeedbackRow, RequestLogRow
from tunelab.errors import DatabaseError


@dataclass(frozen=True)
class ExperimentRequest:
    """One logged request of an experiment."""

    row_id: int  # request_log.id: the key feedback rows point back to here
    variant: str
    status_code: int
    latency_ms: float
    user: str | None
    created_at: datetime


@dataclass(frozen=True)
class ExperimentFeedback:
    """One feedback row on a request of an experiment."""

    row_id: int  # the request's request_log.id
    variant: str
    request_user: str | None  # the user of the request (the experiment's unit), not the rater
    rating: str | None  # "up" | "down"
    score: int | None
    corrected: bool  # the feedback holds a non-empty correction
    created_at: datetime


@dataclass(frozen=True)
class ExperimentRows:
    """Everything the report reads about one experiment."""

    requests: list[ExperimentRequest]
    feedback: list[ExperimentFeedback]
    assigned: dict[str, int]  # units per variant in experiment_assignment


def experiment_rows(db: Database, experiment: str, since: datetime | None = None) -> ExperimentRows:
    """The requests, feedback and assignments of one experiment.

    Args:
        db: the open database.
        experiment: the experiment's name (what requests put in ``model``).
        since: only requests (and assignments) from this time on; None: all.

    Returns:
        The rows, requests in arrival order.

    Raises:
        DatabaseError: the database cannot be read.
    """
    log = RequestLogRow
    where = [log.experiment == experiment, log.variant.is_not(None)]
    if since is not None:
        where.append(log.created_at >= since)
    requests_q = (select(log.id, log.variant, log.status_code, log.latency_ms, log.user,
                         log.created_at).where(*where).order_by(log.id))
    feedback_q = (select(log.id, log.variant, log.user, FeedbackRow.rating, FeedbackRow.score,
                         FeedbackRow.correction, FeedbackRow.created_at)
                  .join(FeedbackRow, FeedbackRow.response_id == log.request_id)
                  .where(*where).order_by(FeedbackRow.created_at, FeedbackRow.id))
    a = ExperimentAssignmentRow
    assigned_where = [a.experiment == experiment]
    if since is not None:
        assigned_where.append(a.assigned_at >= since)
    assigned_q = select(a.variant, func.count()).where(*assigned_where).group_by(a.variant)
    try:
        with db.session() as session:
            requests = [ExperimentRequest(*row) for row in session.execute(requests_q)]
            feedback = [ExperimentFeedback(i, v, u, rating, score, bool(corr and corr.strip()), t)
                        for i, v, u, rating, score, corr, t in session.execute(feedback_q)]
            assigned = {v: int(n) for v, n in session.execute(assigned_q)}
    except DBAPIError as e:
        raise _read_error(db, e) from None
    return ExperimentRows(requests, feedback, assigned)


def experiment_names(db: Database) -> list[str]:
    """The experiments the request log holds requests of, sorted.

    Raises:
        DatabaseError: the database cannot be read.
    """
    q = select(RequestLogRow.experiment).where(RequestLogRow.experiment.is_not(None)).distinct()
    try:
        with db.session() as session:
            return sorted(str(x) for x in session.scalars(q))
    except DBAPIError as e:
        raise _read_error(db, e) from None


def _read_error(db: Database, e: DBAPIError) -> DatabaseError:
    lines = str(e.orig).strip().splitlines()
    return DatabaseError(f"cannot read the experiment tables in {db.safe_url}: "
                         f"{lines[0] if lines else type(e.orig).__name__}",
                         hint="check that the database server is running")
