"""Who may use the review app: users, signed-in sessions, and failed sign-ins.

Users have a name, a role (``admin``, ``reviewer``, ``adjudicator``) and a password hash
that the caller computed (this module never sees a password). A session is stored by
the SHA-256 of its cookie token, so a copy of the database does not hold live tokens;
its CSRF token is stored as is (it is worthless without the cookie). Failed sign-ins
are kept per name, known or not, so that throttling cannot tell an attacker which
names exist.

This module knows nothing of HTTP, cookies or hashing algorithms: it stores and reads rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tunelab.db.database import Database, write_transaction
from tunelab.db.tables import (
    NAME_LENGTH,
    ReviewLoginFailureRow,
    ReviewSessionRow,
    ReviewUserRow,
)
from tunelab.errors import UsageError

ROLES = ("admin", "reviewer", "adjudicator")


@dataclass(frozen=True)
class ReviewUser:
    """A user of the review app (the hash stays in the database layer's hands)."""

    id: int
    name: str
    role: str
    created_at: datetime


@dataclass(frozen=True)
class ReviewSession:
    """A signed-in browser: whose it is, its CSRF token, and when it ends."""

    user: ReviewUser
    csrf_token: str
    expires_at: datetime


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _user(row: ReviewUserRow) -> ReviewUser:
    return ReviewUser(row.id, row.name, row.role, row.created_at)


def check_user_name(name: str) -> None:
    """Refuse a user name that cannot be stored or shown plainly.

    Raises:
        UsageError: empty, too long, or holding spaces or control characters.
    """
    if not name or len(name) > NAME_LENGTH or any(c.isspace() or ord(c) < 32 for c in name):
        raise UsageError(f"user name {name!r}: must be 1 to {NAME_LENGTH} characters with no "
                         "spaces or control characters", hint="pick a name like 'alice'")


def add_user(db: Database, name: str, role: str, password_hash: str) -> ReviewUser:
    """Create a user.

    Raises:
        UsageError: a bad name or role, or the name is taken.
    """
    check_user_name(name)
    if role not in ROLES:
        raise UsageError(f"role {role!r} is not one of {', '.join(ROLES)}",
                         hint="pass --role admin, --role reviewer or --role adjudicator")
    try:
        with db.session() as s, s.begin():
            row = ReviewUserRow(name=name, role=role, password_hash=password_hash,
                                created_at=_now())
            s.add(row)
            s.flush()
            return _user(row)
    except IntegrityError:
        raise UsageError(f"a user named {name!r} already exists",
                         hint="pick another name, or run `tunelab review user password "
                              f"{name}` to give them a new password") from None


def set_password(db: Database, name: str, password_hash: str) -> None:
    """Replace a user's password hash, end their sessions and clear their failed sign-ins.

    Raises:
        UsageError: no such user.
    """
    with write_transaction(db) as conn:
        row = conn.execute(select(ReviewUserRow.id).where(ReviewUserRow.name == name)).first()
        if row is None:
            raise UsageError(f"no user named {name!r}", hint="run `tunelab review user list`")
        conn.execute(update(ReviewUserRow).where(ReviewUserRow.id == row.id)
                     .values(password_hash=password_hash))
        conn.execute(delete(ReviewSessionRow).where(ReviewSessionRow.user_id == row.id))
        conn.execute(delete(ReviewLoginFailureRow).where(ReviewLoginFailureRow.name == name))


def user_with_hash(db: Database, name: str) -> tuple[ReviewUser, str] | None:
    """The user of this name and their stored password hash, or None."""
    with db.session() as s:
        row = s.scalars(select(ReviewUserRow).where(ReviewUserRow.name == name)).first()
        return None if row is None else (_user(row), row.password_hash)


def list_users(db: Database) -> list[ReviewUser]:
    """Every user, by name."""
    with db.session() as s:
        return [_user(r) for r in s.scalars(select(ReviewUserRow).order_by(ReviewUserRow.name))]


def create_session(db: Database, token_hash: str, user_id: int, csrf_token: str,
                   lifetime: timedelta) -> None:
    """Store a new session; expired sessions of every user are swept at the same time."""
    now = _now()
    with write_transaction(db) as conn:
        conn.execute(delete(ReviewSessionRow).where(ReviewSessionRow.expires_at < now))
        conn.execute(insert(ReviewSessionRow).values(
            token_hash=token_hash, user_id=user_id, csrf_token=csrf_token, created_at=now,
            expires_at=now + lifetime))


def get_session(db: Database, token_hash: str) -> ReviewSession | None:
    """The live session with this token hash, or None (unknown or expired)."""
    with db.session() as s:
        found = s.execute(select(ReviewSessionRow, ReviewUserRow)
                          .join(ReviewUserRow, ReviewUserRow.id == ReviewSessionRow.user_id)
                          .where(ReviewSessionRow.token_hash == token_hash)).first()
        if found is None or found[0].expires_at <= _now():
            return None
        return ReviewSession(_user(found[1]), found[0].csrf_token, found[0].expires_at)


def end_session(db: Database, token_hash: str) -> None:
    """Delete a session (sign out); unknown hashes are ignored."""
    with write_transaction(db) as conn:
        conn.execute(delete(ReviewSessionRow).where(ReviewSessionRow.token_hash == token_hash))


def record_login_failure(db: Database, name: str) -> None:
    """Remember one failed sign-in for ``name`` (clipped to the column's length)."""
    with write_transaction(db) as conn:
        conn.execute(insert(ReviewLoginFailureRow).values(name=name[:NAME_LENGTH],
                                                          failed_at=_now()))


def recent_login_failures(db: Database, name: str, window: timedelta) -> tuple[int, datetime | None]:
    """How many sign-ins for ``name`` failed within ``window``, and when the last did."""
    with db.session() as s:
        count, last = s.execute(
            select(func.count(), func.max(ReviewLoginFailureRow.failed_at))
            .where(ReviewLoginFailureRow.name == name[:NAME_LENGTH],
                   ReviewLoginFailureRow.failed_at >= _now() - window)).one()
    if last is not None and last.tzinfo is None:  # max() skips the column's type on SQLite
        last = datetime.fromisoformat(str(last)).replace(tzinfo=timezone.utc)
    elif isinstance(last, str):
        last = datetime.fromisoformat(last).replace(tzinfo=timezone.utc)
    return int(count), last


def clear_login_failures(db: Database, name: str) -> None:
    """Forget the failed sign-ins of ``name`` (after a good one, or an admin's unlock)."""
    with write_transaction(db) as conn:
        conn.execute(delete(ReviewLoginFailureRow).where(
            ReviewLoginFailureRow.name == name[:NAME_LENGTH]))
