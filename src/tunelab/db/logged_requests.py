"""Reading answered requests back from the request log, for review items.

``answered_request_ids`` lists the log rows that were answered (status 200) and kept
their text, filtered in SQL (time, model, experiment), and counts the answered rows
whose text the server did not keep (``log_text: false``), so a caller can say how many
it could not use instead of losing them silently. ``requests_by_ids`` reads those rows.

This module knows nothing of review, sampling or chat messages: it hands back rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from tunelab.db.database import Database
from tunelab.db.requests import RequestRecord
from tunelab.db.tables import RequestLogRow
from tunelab.errors import DatabaseError

OK_STATUS = 200
_CHUNK = 500  # ids per IN (...) query: well under every backend's parameter limit


def answered_request_ids(db: Database, since: datetime | None = None, model: str | None = None,
                         experiment: str | None = None) -> tuple[list[int], int]:
    """Row ids of answered requests that kept their text, and how many did not.

    Args:
        db: the open database.
        since: only requests that arrived at or after this time.
        model: only requests answered by this served model.
        experiment: only requests that named this experiment.

    Returns:
        ``(ids, without_text)``: ids in log order; ``without_text`` counts answered rows
        (same filters) whose prompt or answer is ``NULL``.

    Raises:
        DatabaseError: the database cannot be read.
    """
    log = RequestLogRow
    where = [log.status_code == OK_STATUS]
    if since is not None:
        where.append(log.created_at >= since)
    if model is not None:
        where.append(log.model == model)
    if experiment is not None:
        where.append(log.experiment == experiment)
    has_text = [log.prompt.is_not(None), log.answer.is_not(None)]
    try:
        with db.session() as session:
            ids = list(session.scalars(select(log.id).where(*where, *has_text).order_by(log.id)))
            without = session.scalar(select(func.count()).select_from(log).where(
                *where, (log.prompt.is_(None)) | (log.answer.is_(None))))
    except DBAPIError as e:
        raise _read_error(db, e) from None
    return [int(i) for i in ids], int(without or 0)


def requests_by_ids(db: Database, ids: Sequence[int]) -> list[RequestRecord]:
    """The log rows of these ids, in the order given (ids not in the log are left out).

    Raises:
        DatabaseError: the database cannot be read.
    """
    names = [f.name for f in fields(RequestRecord)]
    found: dict[int, RequestRecord] = {}
    try:
        with db.session() as session:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start:start + _CHUNK])
                for row in session.scalars(select(RequestLogRow).where(RequestLogRow.id.in_(chunk))):
                    found[row.id] = RequestRecord(**{n: getattr(row, n) for n in names})
    except DBAPIError as e:
        raise _read_error(db, e) from None
    return [found[i] for i in ids if i in found]


def _read_error(db: Database, e: DBAPIError) -> DatabaseError:
    lines = str(e.orig).strip().splitlines()
    return DatabaseError(f"cannot read the request log in {db.safe_url}: "
                         f"{lines[0] if lines else type(e.orig).__name__}",
                         hint="check that the database server is running")
