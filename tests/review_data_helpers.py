"""Helpers of the review add/export tests: a SQLite database with logged requests and
feedback written straight into the tables, and reviewers who finish items for real
(claim, submit, adjudicate) through ``tunelab.db.review``."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta

from sqlalchemy import insert, select

from db_records import T0, make_record
from tunelab.data.example import Message
from tunelab.db import open_database
from tunelab.db.database import Database
from tunelab.db.review import Project, adjudicate, claim_next, get_project, submit_answer
from tunelab.db.review_users import add_user
from tunelab.db.tables import FeedbackRow, RequestLogRow, ReviewItemRow
from tunelab.eval.review import write_review_sheet
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import TaskResult


def chat(text: str, system: str | None = None) -> str:
    msgs = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": text}]
    return json.dumps(msgs)


def make_sheet(folder, n: int = 3):
    """A real `tunelab eval --review` sheet of n of 6 rows, two models (base, tuned)."""
    rows = [EvalRow(f"r{i}", [Message("system", "Be brief."),
                              Message("user", f"What is {i}+{i}?\n\nShow it.")], str(2 * i))
            for i in range(6)]
    results = [TaskResult("qa", model, {}, [{"answer": f"{model} says {2 * i}"} for i in range(6)])
               for model in ("base", "tuned")]
    return write_review_sheet(folder, rows, results, n=n, seed=3)


def open_db(tmp_path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'review.db'}")


def log_requests(db: Database, *records: dict) -> list[str]:
    """Write request_log rows (``make_record`` changes each); returns their request ids."""
    start = 1000 + len(_request_ids(db))
    rows = [asdict(make_record(start + i, **changes)) for i, changes in enumerate(records)]
    with db.engine.begin() as conn:
        conn.execute(insert(RequestLogRow), rows)
    return [r["request_id"] for r in rows]


def _request_ids(db: Database) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(RequestLogRow.request_id)))


def give_feedback(db: Database, response_id: str, user: str = "", **said) -> int:
    when = T0 + timedelta(minutes=1)
    with db.engine.begin() as conn:
        return int(conn.execute(insert(FeedbackRow).values(
            response_id=response_id, user=user, created_at=when, updated_at=when,
            **said)).inserted_primary_key[0])


def item_ids(db: Database, project: Project) -> dict[str, int]:
    """source_ref -> item id."""
    with db.session() as s:
        return {ref: i for i, ref in s.execute(
            select(ReviewItemRow.id, ReviewItemRow.source_ref)
            .where(ReviewItemRow.project_id == project.id))}


def agree(answers: list[dict]) -> bool:
    return all(a == answers[0] for a in answers)


class Reviewers:
    """Two reviewers and an adjudicator who finish items as a test says."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.alice = add_user(db, "alice", "reviewer", "hash-a").id
        self.bob = add_user(db, "bob", "reviewer", "hash-b").id
        self.carol = add_user(db, "carol", "adjudicator", "hash-c").id

    def answer(self, name: str, plan: dict[int, tuple[dict, dict]]) -> None:
        """Both reviewers answer each planned item (in the order claims hand them out)."""
        for _ in plan:
            project = get_project(self.db, name)  # the current guideline version
            i = claim_next(self.db, project, self.alice)
            assert i in plan, f"item {i} was claimed but not planned"
            submit_answer(self.db, i, self.alice, plan[i][0], project.guideline_version, agree)
            assert claim_next(self.db, project, self.bob) == i
            submit_answer(self.db, i, self.bob, plan[i][1], project.guideline_version, agree)

    def settle(self, name: str, item_id: int, decision: dict) -> None:
        project = get_project(self.db, name)
        adjudicate(self.db, item_id, self.carol, decision, project.guideline_version)
