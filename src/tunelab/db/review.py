"""Review projects, their items, who reviews what, answers and adjudications.

The rules the database keeps, whatever the web app does:

* An item goes to at most ``reviews_per_item`` reviewers (1 to 3), never twice to the
  same one: ``review_assignment`` is unique per (item, reviewer) and per (item, slot),
  so two reviewers claiming the last slot at once cannot both win; the loser's insert
  fails and it takes the next item.
* A reviewer holds one open item per project at a time (``claim_next`` hands back the
  one they hold before claiming another), so nothing piles up behind an absent reviewer.
* An answer is final once submitted, and answers are blind: reads that show answers
  are the caller's to guard (the app shows a reviewer only their own).
* When an item has all its answers, the caller's ``agree`` function decides: ``agreed``
  or ``disagreed``; a disagreed item waits for an adjudicator who did not review it, whose
  decision is final and is stored with the answers it settled (``adjudicated``).
* Only agreed and adjudicated items come back from ``final_items``: what exports read.

Submitting runs in one write transaction that locks the item (``FOR UPDATE`` on
PostgreSQL, the write lock on SQLite), so two reviewers finishing an item at the same
moment both land, and exactly one of them sees the item complete.

This module knows nothing of HTTP, label schemas or statistics: answers are JSON
documents; whether two agree is the caller's function.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tunelab.db.database import Database, write_transaction
from tunelab.db.tables import (
    NAME_LENGTH,
    REF_LENGTH,
    FeedbackRow,
    ReviewAdjudicationRow,
    ReviewAssignmentRow,
    ReviewExportRow,
    ReviewGuidelineRow,
    ReviewItemRow,
    ReviewProjectRow,
    ReviewUserRow,
)
from tunelab.errors import UsageError

KINDS = ("output", "data", "feedback")
MAX_REVIEWS = 3
OPEN, AGREED, DISAGREED, ADJUDICATED = "open", "agreed", "disagreed", "adjudicated"
_PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CLAIM_ATTEMPTS = 5  # lost races for a slot; each retry sees the winner's row


class ReviewRefused(UsageError):
    """A review action that the rules refuse: ``code`` says which rule, for the app's status."""

    def __init__(self, message: str, code: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


@dataclass(frozen=True)
class Project:
    """A review project with its current guideline."""

    id: int
    name: str
    kind: str
    label_schema: dict
    reviews_per_item: int
    guideline_version: int
    guideline: str
    created_at: datetime


@dataclass(frozen=True)
class ItemInput:
    """One item to add: ``source_ref`` is unique within a project (re-adding it is skipped);
    ``shown`` is what reviewers see, ``hidden`` what they must not (JSON documents)."""

    source: str
    source_ref: str
    shown: dict
    hidden: dict


@dataclass(frozen=True)
class Item:
    """A stored item and where it stands."""

    id: int
    project_id: int
    source: str
    source_ref: str
    shown: dict
    hidden: dict
    status: str
    created_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class AnswerRecord:
    """One reviewer's submitted answer."""

    item_id: int
    reviewer: str
    answer: dict
    guideline_version: int
    submitted_at: datetime


@dataclass(frozen=True)
class Adjudication:
    """An adjudicator's final decision and the answers it settled."""

    item_id: int
    adjudicator: str
    decision: dict
    answers: list[dict]
    guideline_version: int
    created_at: datetime


@dataclass(frozen=True)
class FinalItem:
    """An agreed or adjudicated item: the only kind that leaves the app."""

    item_id: int
    source: str
    source_ref: str
    shown: dict
    hidden: dict
    decision: dict
    how: str
    reviewers: tuple[str, ...]
    adjudicator: str | None
    guideline_versions: tuple[int, ...]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _project(row: ReviewProjectRow, guideline: str) -> Project:
    return Project(row.id, row.name, row.kind, json.loads(row.label_schema), row.reviews_per_item,
                   row.guideline_version, guideline, row.created_at)


def _item(row: ReviewItemRow) -> Item:
    return Item(row.id, row.project_id, row.source, row.source_ref, json.loads(row.shown),
                json.loads(row.hidden), row.status, row.created_at, row.completed_at)


def create_project(db: Database, name: str, kind: str, label_schema: dict, guideline: str,
                   reviews_per_item: int) -> Project:
    """Create a project with guideline version 1.

    Raises:
        UsageError: a bad name, kind or number of reviews, or the name is taken.
    """
    if len(name) > NAME_LENGTH or not _PROJECT_NAME.fullmatch(name):
        raise UsageError(f"project name {name!r}: must be 1 to {NAME_LENGTH} letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit (it is part of "
                         "the app's addresses)", hint="pick a name like 'support-answers'")
    if kind not in KINDS:
        raise UsageError(f"project kind {kind!r} is not one of {', '.join(KINDS)}")
    if not 1 <= reviews_per_item <= MAX_REVIEWS:
        raise UsageError(f"reviews per item is {reviews_per_item}; must be 1 to {MAX_REVIEWS}",
                         hint="pass --reviews 2 for double review")
    now = _now()
    try:
        with write_transaction(db) as conn:
            pid = conn.execute(insert(ReviewProjectRow).values(
                name=name, kind=kind, label_schema=json.dumps(label_schema),
                reviews_per_item=reviews_per_item, guideline_version=1, created_at=now)
            ).inserted_primary_key[0]
            conn.execute(insert(ReviewGuidelineRow).values(project_id=pid, version=1,
                                                           text=guideline, created_at=now))
    except IntegrityError:
        raise UsageError(f"a review project named {name!r} already exists",
                         hint="pick another name, or add items to it with "
                              f"`tunelab review add {name} FILE`") from None
    return get_project(db, name)


def get_project(db: Database, name: str) -> Project:
    """The project of this name with its current guideline.

    Raises:
        UsageError: no such project.
    """
    with db.session() as s:
        row = s.scalars(select(ReviewProjectRow).where(ReviewProjectRow.name == name)).first()
        if row is None:
            known = ", ".join(s.scalars(select(ReviewProjectRow.name))) or "none yet"
            raise UsageError(f"no review project named {name!r} (projects: {known})",
                             hint="create it with `tunelab review project add NAME --kind output "
                                  "--guideline guide.md`")
        text = s.scalar(select(ReviewGuidelineRow.text).where(
            ReviewGuidelineRow.project_id == row.id,
            ReviewGuidelineRow.version == row.guideline_version))
        return _project(row, text or "")


def list_projects(db: Database) -> list[Project]:
    """Every project, by name (each with its current guideline)."""
    with db.session() as s:
        names = list(s.scalars(select(ReviewProjectRow.name).order_by(ReviewProjectRow.name)))
    return [get_project(db, n) for n in names]


def set_guideline(db: Database, name: str, text: str) -> int:
    """Store a new guideline version for a project; answers from now on name it.

    Returns:
        The new version number.
    """
    project = get_project(db, name)
    with write_transaction(db) as conn:
        version = conn.scalar(select(func.max(ReviewGuidelineRow.version)).where(
            ReviewGuidelineRow.project_id == project.id)) + 1
        conn.execute(insert(ReviewGuidelineRow).values(project_id=project.id, version=version,
                                                       text=text, created_at=_now()))
        conn.execute(update(ReviewProjectRow).where(ReviewProjectRow.id == project.id)
                     .values(guideline_version=version))
    return int(version)


def add_items(db: Database, project: Project, items: Sequence[ItemInput]) -> tuple[int, int]:
    """Add items to a project; those whose ``source_ref`` it already holds are skipped.

    Returns:
        ``(added, skipped)``.

    Raises:
        UsageError: a reference longer than the column holds (nothing is added).
    """
    for it in items:
        if not it.source_ref or len(it.source_ref) > REF_LENGTH:
            raise UsageError(f"item reference {it.source_ref[:80]!r}: must be 1 to "
                             f"{REF_LENGTH} characters; nothing was added")
    now = _now()
    added = skipped = 0
    with write_transaction(db) as conn:
        _lock_project(conn, project)  # two adds at once take turns (PostgreSQL)
        have = set(conn.scalars(select(ReviewItemRow.source_ref).where(
            ReviewItemRow.project_id == project.id)))
        for it in items:
            if it.source_ref in have:
                skipped += 1
                continue
            have.add(it.source_ref)
            conn.execute(insert(ReviewItemRow).values(
                project_id=project.id, source=it.source, source_ref=it.source_ref,
                shown=json.dumps(it.shown), hidden=json.dumps(it.hidden), status=OPEN,
                created_at=now))
            added += 1
    return added, skipped


def get_item(db: Database, item_id: int) -> Item | None:
    """The item of this id, or None."""
    with db.session() as s:
        row = s.get(ReviewItemRow, item_id)
        return None if row is None else _item(row)


def held_item(db: Database, project: Project, user_id: int) -> int | None:
    """The item this reviewer holds in the project and has not answered, if any."""
    with db.session() as s:
        return s.scalar(select(ReviewAssignmentRow.item_id)
                        .join(ReviewItemRow, ReviewItemRow.id == ReviewAssignmentRow.item_id)
                        .where(ReviewItemRow.project_id == project.id,
                               ReviewAssignmentRow.user_id == user_id,
                               ReviewAssignmentRow.answered_at.is_(None))
                        .order_by(ReviewAssignmentRow.id).limit(1))


def claim_next(db: Database, project: Project, user_id: int) -> int | None:
    """Give this reviewer their next item: the one they hold, else a new one.

    A new one is an open item with a free slot that they were never given; items that
    others already started come first (so double reviews finish sooner), then the oldest.

    Returns:
        The item id, or None when nothing is left for them.
    """
    held = held_item(db, project, user_id)
    if held is not None:
        return held
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            with write_transaction(db) as conn:
                return _claim(conn, project, user_id)
        except IntegrityError:
            continue  # another reviewer took that slot a moment ago: look again
    return None


def _lock_project(conn: Connection, project: Project) -> None:
    """Take the project row's lock (PostgreSQL; SQLite's write transaction already holds
    the database's), so claims and adds in one project take turns."""
    conn.execute(select(ReviewProjectRow.id).where(ReviewProjectRow.id == project.id)
                 .with_for_update())


def _claim(conn: Connection, project: Project, user_id: int) -> int | None:
    # Claims in a project take turns (the project row's lock on PostgreSQL; SQLite's write
    # lock already does): racing for slots instead, a crowd of reviewers each lost again
    # and again, and after _CLAIM_ATTEMPTS losses one was told "nothing left" while free
    # slots remained (tests/integration/test_review_concurrency.py).
    _lock_project(conn, project)
    held = conn.scalar(select(ReviewAssignmentRow.item_id)
                       .join(ReviewItemRow, ReviewItemRow.id == ReviewAssignmentRow.item_id)
                       .where(ReviewItemRow.project_id == project.id,
                              ReviewAssignmentRow.user_id == user_id,
                              ReviewAssignmentRow.answered_at.is_(None)).limit(1))
    if held is not None:  # a second "next" of the same reviewer (a double click) won
        return int(held)
    taken = (select(func.count()).where(ReviewAssignmentRow.item_id == ReviewItemRow.id)
             .correlate(ReviewItemRow).scalar_subquery())
    mine = select(ReviewAssignmentRow.item_id).where(ReviewAssignmentRow.user_id == user_id)
    found = conn.execute(
        select(ReviewItemRow.id, taken.label("taken"))
        .where(ReviewItemRow.project_id == project.id, ReviewItemRow.status == OPEN,
               ReviewItemRow.id.not_in(mine), taken < project.reviews_per_item)
        .order_by(taken.desc(), ReviewItemRow.id).limit(1)).first()
    if found is None:
        return None
    conn.execute(insert(ReviewAssignmentRow).values(
        item_id=found.id, user_id=user_id, slot=int(found.taken) + 1, assigned_at=_now()))
    return int(found.id)


def is_assigned(db: Database, item_id: int, user_id: int) -> bool:
    """Whether this item was given to this reviewer (answered or not)."""
    with db.session() as s:
        return s.scalar(select(func.count()).where(ReviewAssignmentRow.item_id == item_id,
                                                   ReviewAssignmentRow.user_id == user_id)) > 0


def own_answer(db: Database, item_id: int, user_id: int) -> AnswerRecord | None:
    """This reviewer's own submitted answer to the item, or None."""
    with db.session() as s:
        row = s.execute(select(ReviewAssignmentRow, ReviewUserRow.name)
                        .join(ReviewUserRow, ReviewUserRow.id == ReviewAssignmentRow.user_id)
                        .where(ReviewAssignmentRow.item_id == item_id,
                               ReviewAssignmentRow.user_id == user_id,
                               ReviewAssignmentRow.answered_at.is_not(None))).first()
    return None if row is None else _answer(row[0], row[1])


def _answer(row: ReviewAssignmentRow, name: str) -> AnswerRecord:
    assert row.answer is not None and row.answered_at is not None
    return AnswerRecord(row.item_id, name, json.loads(row.answer), row.guideline_version or 0,
                        row.answered_at)


def submit_answer(db: Database, item_id: int, user_id: int, answer: dict, guideline_version: int,
                  agree: Callable[[list[dict]], bool]) -> str:
    """Store a reviewer's answer; when it is the item's last, settle the item.

    Args:
        item_id, user_id: the item and the reviewer it was given to.
        answer: the checked answer (field -> value).
        guideline_version: the guideline version the reviewer saw.
        agree: told every answer of a complete item, says whether they agree.

    Returns:
        The item's status after the write: open, agreed or disagreed.

    Raises:
        ReviewRefused: ``not_assigned``, ``already_answered`` or ``closed``.
    """
    with write_transaction(db) as conn:
        item = conn.execute(select(ReviewItemRow).where(ReviewItemRow.id == item_id)
                            .with_for_update()).first()
        mine = conn.execute(select(ReviewAssignmentRow).where(
            ReviewAssignmentRow.item_id == item_id,
            ReviewAssignmentRow.user_id == user_id)).first()
        if item is None or mine is None:
            raise ReviewRefused("this item was not given to you", "not_assigned",
                                hint="take the next item from your queue")
        if mine.answered_at is not None:
            raise ReviewRefused("you already answered this item; answers are final",
                                "already_answered", hint="take the next item from your queue")
        if item.status != OPEN:
            raise ReviewRefused(f"this item is already {item.status}", "closed")
        now = _now()
        conn.execute(update(ReviewAssignmentRow).where(ReviewAssignmentRow.id == mine.id)
                     .values(answer=json.dumps(answer), guideline_version=guideline_version,
                             answered_at=now))
        need = conn.scalar(select(ReviewProjectRow.reviews_per_item).where(
            ReviewProjectRow.id == item.project_id))
        answers = [json.loads(a) for a in conn.scalars(
            select(ReviewAssignmentRow.answer).where(ReviewAssignmentRow.item_id == item_id,
                                                     ReviewAssignmentRow.answered_at.is_not(None)))]
        if len(answers) < need:
            return OPEN
        status = AGREED if agree(answers) else DISAGREED
        conn.execute(update(ReviewItemRow).where(ReviewItemRow.id == item_id)
                     .values(status=status, completed_at=now))
        return status


def item_answers(db: Database, item_id: int) -> list[AnswerRecord]:
    """Every submitted answer to an item, in the order they came (guard who may see them)."""
    with db.session() as s:
        rows = s.execute(select(ReviewAssignmentRow, ReviewUserRow.name)
                         .join(ReviewUserRow, ReviewUserRow.id == ReviewAssignmentRow.user_id)
                         .where(ReviewAssignmentRow.item_id == item_id,
                                ReviewAssignmentRow.answered_at.is_not(None))
                         .order_by(ReviewAssignmentRow.answered_at, ReviewAssignmentRow.id)).all()
    return [_answer(r, n) for r, n in rows]


def project_answers(db: Database, project: Project) -> list[AnswerRecord]:
    """Every submitted answer in a project (for agreement figures)."""
    with db.session() as s:
        rows = s.execute(select(ReviewAssignmentRow, ReviewUserRow.name)
                         .join(ReviewUserRow, ReviewUserRow.id == ReviewAssignmentRow.user_id)
                         .join(ReviewItemRow, ReviewItemRow.id == ReviewAssignmentRow.item_id)
                         .where(ReviewItemRow.project_id == project.id,
                                ReviewAssignmentRow.answered_at.is_not(None))
                         .order_by(ReviewAssignmentRow.item_id, ReviewAssignmentRow.answered_at)).all()
    return [_answer(r, n) for r, n in rows]


def adjudication_queue(db: Database, project: Project, user_id: int) -> list[int]:
    """Disagreed items of the project that this adjudicator did not review, oldest first."""
    reviewed = select(ReviewAssignmentRow.item_id).where(ReviewAssignmentRow.user_id == user_id)
    with db.session() as s:
        return list(s.scalars(select(ReviewItemRow.id).where(
            ReviewItemRow.project_id == project.id, ReviewItemRow.status == DISAGREED,
            ReviewItemRow.id.not_in(reviewed)).order_by(ReviewItemRow.completed_at,
                                                        ReviewItemRow.id)))


def adjudicate(db: Database, item_id: int, user_id: int, decision: dict,
               guideline_version: int) -> None:
    """Record the final decision on a disagreed item, with the answers it settles.

    Raises:
        ReviewRefused: ``not_disagreed`` (nothing to settle) or ``own_item`` (the
            adjudicator reviewed it).
    """
    with write_transaction(db) as conn:
        item = conn.execute(select(ReviewItemRow).where(ReviewItemRow.id == item_id)
                            .with_for_update()).first()
        if item is None or item.status != DISAGREED:
            raise ReviewRefused("this item is not waiting for adjudication", "not_disagreed",
                                hint="open the adjudication queue for the items that are")
        rows = conn.execute(select(ReviewAssignmentRow.user_id, ReviewAssignmentRow.answer,
                                   ReviewAssignmentRow.guideline_version,
                                   ReviewAssignmentRow.answered_at, ReviewUserRow.name)
                            .join(ReviewUserRow, ReviewUserRow.id == ReviewAssignmentRow.user_id)
                            .where(ReviewAssignmentRow.item_id == item_id)
                            .order_by(ReviewAssignmentRow.answered_at)).all()
        if any(r.user_id == user_id for r in rows):
            raise ReviewRefused("you reviewed this item; another adjudicator must decide it",
                                "own_item")
        settled = [{"reviewer": r.name, "answer": json.loads(r.answer or "{}"),
                    "guideline_version": r.guideline_version,
                    "submitted_at": r.answered_at.isoformat() if r.answered_at else None}
                   for r in rows]
        now = _now()
        conn.execute(insert(ReviewAdjudicationRow).values(
            item_id=item_id, user_id=user_id, decision=json.dumps(decision),
            answers=json.dumps(settled), guideline_version=guideline_version, created_at=now))
        conn.execute(update(ReviewItemRow).where(ReviewItemRow.id == item_id)
                     .values(status=ADJUDICATED))


def get_adjudication(db: Database, item_id: int) -> Adjudication | None:
    """The adjudication of an item, or None."""
    with db.session() as s:
        found = s.execute(select(ReviewAdjudicationRow, ReviewUserRow.name)
                          .join(ReviewUserRow, ReviewUserRow.id == ReviewAdjudicationRow.user_id)
                          .where(ReviewAdjudicationRow.item_id == item_id)).first()
    if found is None:
        return None
    row, name = found
    return Adjudication(row.item_id, name, json.loads(row.decision), json.loads(row.answers),
                        row.guideline_version, row.created_at)


def final_items(db: Database, project: Project) -> list[FinalItem]:
    """Every agreed or adjudicated item with its final decision, oldest first.

    An agreed item's decision is its first answer (the answers agree); an adjudicated
    item's is the adjudicator's.
    """
    with db.session() as s:
        rows = list(s.scalars(select(ReviewItemRow).where(
            ReviewItemRow.project_id == project.id,
            ReviewItemRow.status.in_((AGREED, ADJUDICATED))).order_by(ReviewItemRow.id)))
    out = []
    for row in rows:
        answers = item_answers(db, row.id)
        versions = {a.guideline_version for a in answers}
        adjudicator = None
        if row.status == ADJUDICATED:
            adj = get_adjudication(db, row.id)
            assert adj is not None  # written in the same transaction as the status
            decision, adjudicator = adj.decision, adj.adjudicator
            versions.add(adj.guideline_version)
        else:
            decision = answers[0].answer
        out.append(FinalItem(row.id, row.source, row.source_ref, json.loads(row.shown),
                             json.loads(row.hidden), decision, row.status,
                             tuple(a.reviewer for a in answers), adjudicator,
                             tuple(sorted(versions))))
    return out


def status_counts(db: Database, project: Project) -> dict[str, int]:
    """Items per status (open, agreed, disagreed, adjudicated), zeros included."""
    with db.session() as s:
        rows = s.execute(select(ReviewItemRow.status, func.count())
                         .where(ReviewItemRow.project_id == project.id)
                         .group_by(ReviewItemRow.status)).all()
    counts = dict.fromkeys((OPEN, AGREED, DISAGREED, ADJUDICATED), 0)
    counts.update({k: int(v) for k, v in rows})
    return counts


def reviewer_counts(db: Database, project: Project) -> dict[str, dict[str, int]]:
    """Per reviewer: items answered and items held (given, not yet answered)."""
    with db.session() as s:
        rows = s.execute(select(ReviewUserRow.name, ReviewAssignmentRow.answered_at.is_not(None),
                                func.count())
                         .join(ReviewUserRow, ReviewUserRow.id == ReviewAssignmentRow.user_id)
                         .join(ReviewItemRow, ReviewItemRow.id == ReviewAssignmentRow.item_id)
                         .where(ReviewItemRow.project_id == project.id)
                         .group_by(ReviewUserRow.name,
                                   ReviewAssignmentRow.answered_at.is_not(None))).all()
    out: dict[str, dict[str, int]] = {}
    for name, answered, n in rows:
        out.setdefault(name, {"answered": 0, "held": 0})["answered" if answered else "held"] += n
    return out


def waiting_for(db: Database, project: Project, user_id: int) -> int:
    """How many items this reviewer could still be given (held one included)."""
    taken = (select(func.count()).where(ReviewAssignmentRow.item_id == ReviewItemRow.id)
             .correlate(ReviewItemRow).scalar_subquery())
    mine = select(ReviewAssignmentRow.item_id).where(ReviewAssignmentRow.user_id == user_id)
    with db.session() as s:
        free = s.scalar(select(func.count()).select_from(ReviewItemRow).where(
            ReviewItemRow.project_id == project.id, ReviewItemRow.status == OPEN,
            ReviewItemRow.id.not_in(mine), taken < project.reviews_per_item))
    return int(free) + (held_item(db, project, user_id) is not None)


def record_export(db: Database, project: Project, kind: str, path: str, items: int,
                  provenance: dict) -> int:
    """Remember one export (what, where, from whom); returns its id."""
    with write_transaction(db) as conn:
        return int(conn.execute(insert(ReviewExportRow).values(
            project_id=project.id, kind=kind, path=path, items=items,
            provenance=json.dumps(provenance), created_at=_now())).inserted_primary_key[0])


def list_exports(db: Database, project: Project) -> list[dict]:
    """The project's exports, newest first, as plain dicts."""
    with db.session() as s:
        rows = s.scalars(select(ReviewExportRow).where(ReviewExportRow.project_id == project.id)
                         .order_by(ReviewExportRow.id.desc()))
        return [{"id": r.id, "kind": r.kind, "path": r.path, "items": r.items,
                 "provenance": json.loads(r.provenance), "created_at": r.created_at.isoformat()}
                for r in rows]


def mark_feedback_reviewed(db: Database,
                           decisions: Sequence[tuple[int, str, str | None]]) -> int:
    """Set the review status of feedback rows: ``(feedback_id, "approved"|"rejected",
    correction or None)``; returns how many rows exist and were set."""
    done = 0
    with write_transaction(db) as conn:
        for fid, status, correction in decisions:
            if status not in ("approved", "rejected"):
                raise UsageError(f"feedback review status {status!r}: must be approved or rejected")
            done += conn.execute(update(FeedbackRow).where(FeedbackRow.id == fid).values(
                review_status=status, review_correction=correction,
                reviewed_at=_now())).rowcount
    return done
