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
