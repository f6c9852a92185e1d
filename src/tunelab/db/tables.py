"""The tables of the tunelab database, as typed SQLAlchemy 2 declarations.

``request_log`` holds one row per request a server answered (or refused): what came in,
what went out, token counts and timings, and the experiment variant that answered. The
columns mirror ``RequestRecord`` (``tunelab.db.requests``), plus an integer primary key
that orders rows by arrival at the database. ``feedback`` holds what users said about a
response (one row per response and user); ``experiment_assignment`` remembers which
variant of an experiment each unit (user) was given, so a weight change or a restart
never moves them. The schema itself is created and changed only by the Alembic migrations
in ``migrations/versions/``; these classes are what the code reads and writes with, and
``Base.metadata`` is what autogenerate compares a new revision against.

Times are stored in UTC: ``UTCDateTime`` turns an aware time into UTC before writing
(SQLite keeps no time zone) and hands back an aware UTC time on reading.

This module knows nothing of HTTP or models: a row is strings, numbers and times.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Lengths of the short text columns. Callers refuse longer values (the server answers
# 400 for a longer `user`, and refuses to serve a longer model name); the writer still
# clips, with a warning, so one odd row cannot make PostgreSQL refuse a whole batch.
ID_LENGTH = 100
NAME_LENGTH = 200
SHORT_LENGTH = 32


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp with time zone that always reads back as an aware UTC ``datetime``.

    A naive value is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        # SQLite has no time zones: the UTC wall time is stored; PostgreSQL keeps the zone.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """The declarative base of every tunelab table."""


class RequestLogRow(Base):
    """One row of ``request_log``; see ``RequestRecord`` for what each column means."""

    __tablename__ = "request_log"

    # BIGINT on PostgreSQL (a busy log passes 2**31 rows); SQLite's INTEGER PRIMARY KEY
    # is its rowid, which only the plain INTEGER type aliases.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"),
                                    primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    endpoint: Mapped[str] = mapped_column(String(SHORT_LENGTH))
    model: Mapped[str] = mapped_column(String(NAME_LENGTH))
    user: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    prompt: Mapped[str | None] = mapped_column(Text())
    answer: Mapped[str | None] = mapped_column(Text())
    prompt_tokens: Mapped[int] = mapped_column(Integer())
    completion_tokens: Mapped[int] = mapped_column(Integer())
    latency_ms: Mapped[float] = mapped_column(Float())
    time_to_first_token_ms: Mapped[float | None] = mapped_column(Float())
    finish_reason: Mapped[str | None] = mapped_column(String(SHORT_LENGTH))
    status_code: Mapped[int] = mapped_column(Integer())
    stream: Mapped[bool] = mapped_column(Boolean())
    filtered: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    experiment: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    variant: Mapped[str | None] = mapped_column(String(NAME_LENGTH))

    __table_args__ = (
        Index("ix_request_log_created_at", "created_at"),
        Index("ix_request_log_model", "model"),
        Index("ix_request_log_request_id", "request_id"),
        Index("ix_request_log_experiment", "experiment", "variant"),
    )


class FeedbackRow(Base):
    """One user's feedback on one response: at most one row per (response_id, user).

    ``user`` is ``""`` when the feedback names no user (a NULL would not be unique).
    ``idempotency_key``, when the client sent one, makes a retried POST return the row
    it first created. ``rating`` is ``"up"`` or ``"down"``; ``score`` 1 to 5;
    ``correction`` is the answer the user says was right.
    """

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"),
                                    primary_key=True, autoincrement=True)
    response_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    user: Mapped[str] = mapped_column(String(NAME_LENGTH))
    idempotency_key: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    rating: Mapped[str | None] = mapped_column(String(SHORT_LENGTH))
    score: Mapped[int | None] = mapped_column(Integer())
    correction: Mapped[str | None] = mapped_column(Text())
    comment: Mapped[str | None] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # set by a feedback review project (migration 0003): "approved" or "rejected", and
    # the correction the reviewers settled on (None: the user's own stands)
    review_status: Mapped[str | None] = mapped_column(String(SHORT_LENGTH))
    review_correction: Mapped[str | None] = mapped_column(Text())
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("response_id", "user", name="uq_feedback_response_user"),
        UniqueConstraint("idempotency_key", name="uq_feedback_idempotency_key"),
        Index("ix_feedback_created_at", "created_at"),
    )


class ExperimentAssignmentRow(Base):
    """The variant one unit (a user) of one experiment was given, first come, kept for good."""

    __tablename__ = "experiment_assignment"

    experiment: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    unit: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    variant: Mapped[str] = mapped_column(String(NAME_LENGTH))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ---- human review (migration 0003) ------------------------------------------------------
# The review app's tables. JSON documents (a label schema, what an item shows, an answer)
# are stored as text: SQLite and PostgreSQL read them alike, and no query looks inside.
HASH_LENGTH = 64  # a SHA-256 hex digest
PASSWORD_HASH_LENGTH = 255  # an argon2 encoded hash is about 100 characters
REF_LENGTH = 500  # an item's source reference (a file and line, a request id ...)


class ReviewUserRow(Base):
    """A person who uses the review app: ``role`` admin, reviewer or adjudicator.

    ``password_hash`` is an argon2id hash (never the password)."""

    __tablename__ = "review_user"

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    role: Mapped[str] = mapped_column(String(SHORT_LENGTH))
    password_hash: Mapped[str] = mapped_column(String(PASSWORD_HASH_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReviewSessionRow(Base):
    """A signed-in browser: the SHA-256 of its cookie token (never the token itself)."""

    __tablename__ = "review_session"

    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer())
    csrf_token: Mapped[str] = mapped_column(String(HASH_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReviewLoginFailureRow(Base):
    """One failed sign-in for a user name (known or not): what login throttling counts."""

    __tablename__ = "review_login_failure"

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_review_login_failure_name", "name", "failed_at"),)


class ReviewProjectRow(Base):
    """A review project: its kind (output, data, feedback), label schema (JSON), how many
    reviewers answer each item, and the current guideline version."""

    __tablename__ = "review_project"

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(SHORT_LENGTH))
    label_schema: Mapped[str] = mapped_column(Text())
    reviews_per_item: Mapped[int] = mapped_column(Integer())
    guideline_version: Mapped[int] = mapped_column(Integer())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReviewGuidelineRow(Base):
    """Every version of a project's guideline (Markdown): answers name the one they saw."""

    __tablename__ = "review_guideline"

    project_id: Mapped[int] = mapped_column(Integer(), primary_key=True)
    version: Mapped[int] = mapped_column(Integer(), primary_key=True)
    text: Mapped[str] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReviewItemRow(Base):
    """One thing to review. ``shown`` is what reviewers see, ``hidden`` what they must not
    (which model wrote which answer, the original row); ``status`` is open, agreed,
    disagreed (waiting for adjudication) or adjudicated."""

    __tablename__ = "review_item"

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(Integer())
    source: Mapped[str] = mapped_column(String(SHORT_LENGTH))
    source_ref: Mapped[str] = mapped_column(String(REF_LENGTH))
    shown: Mapped[str] = mapped_column(Text())
    hidden: Mapped[str] = mapped_column(Text())
    status: Mapped[str] = mapped_column(String(SHORT_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("project_id", "source_ref", name="uq_review_item_ref"),
        Index("ix_review_item_status", "project_id", "status"),
    )


class ReviewAssignmentRow(Base):
    """One item given to one reviewer, and the answer once submitted (JSON).

    Unique per (item, reviewer): nobody gets an item twice; unique per (item, slot):
    no item gets more reviewers than its project asks for, even when two claim at once."""

    __tablename__ = "review_assignment"

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(Integer())
    user_id: Mapped[int] = mapped_column(Integer())
    slot: Mapped[int] = mapped_column(Integer())
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    answer: Mapped[str | None] = mapped_column(Text())
    guideline_version: Mapped[int | None] = mapped_column(Integer())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("item_id", "user_id", name="uq_review_assignment_user"),
        UniqueConstraint("item_id", "slot", name="uq_review_assignment_slot"),
        Index("ix_review_assignment_user", "user_id", "answered_at"),
    )


class ReviewAdjudicationRow(Base):
    """The final decision on a disagreed item, with the answers it overruled (JSON)."""

    __tablename__ = "review_adjudication"

    item_id: Mapped[int] = mapped_column(Integer(), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer())
    decision: Mapped[str] = mapped_column(Text())
    answers: Mapped[str] = mapped_column(Text())
    guideline_version: Mapped[int] = mapped_column(Integer())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReviewExportRow(Base):
    """One export of a project: what it wrote, from which reviewers and guideline versions."""

    __tablename__ = "review_export"

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(Integer())
    kind: Mapped[str] = mapped_column(String(SHORT_LENGTH))
    path: Mapped[str] = mapped_column(Text())
    items: Mapped[int] = mapped_column(Integer())
    provenance: Mapped[str] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
