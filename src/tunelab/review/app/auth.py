"""Sign-in, sessions and CSRF for the review app.

* Sessions: a random 256-bit token in a ``__Host-`` cookie that is ``Secure``,
  ``HttpOnly`` and ``SameSite=Strict`` (browsers treat 127.0.0.1 and localhost as
  secure, so this works on the loopback address the app binds by default; elsewhere put
  it behind HTTPS). The database stores only the token's SHA-256.
* CSRF: every form carries the session's own token (the synchronizer pattern), checked
  in constant time; the sign-in form, before any session exists, carries a token that
  must equal a cookie of its own (double submit). A form whose ``Origin`` header names
  another site is refused as well.
* Throttling: failed sign-ins are counted per name (known or not) within a window; from
  ``slow_after`` failures on each attempt waits ``slow_seconds`` (on the event loop, not
  holding a thread), at ``lock_after`` the name is locked until the window has passed,
  even for the right password. Sign-ins are logged with the user's name, failures with
  the name only when it is a user's (a typed "name" may be a misplaced password), never
  a password.

This module knows nothing of pages or projects.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from fastapi import Request
from starlette.responses import Response

from tunelab.config.review import ReviewSettings
from tunelab.db.database import Database
from tunelab.db.review_users import (
    ReviewSession,
    ReviewUser,
    clear_login_failures,
    create_session,
    end_session,
    get_session,
    recent_login_failures,
    record_login_failure,
    user_with_hash,
)
from tunelab.db.tables import NAME_LENGTH
from tunelab.review.passwords import verify_password

log = logging.getLogger("tunelab.review")

SESSION_COOKIE = "__Host-tunelab_session"
LOGIN_COOKIE = "__Host-tunelab_login"
CSRF_FIELD = "csrf_token"


class NotSignedIn(Exception):
    """The request carries no live session."""


class NotFound(Exception):
    """No such project or item (a 404 page)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(Exception):
    """The signed-in user may not do this (wrong role, not their item, bad CSRF token)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class LoginResult:
    """What a sign-in attempt came to: the user and session token on success, else why not."""

    user: ReviewUser | None = None
    token: str | None = None
    locked_until: datetime | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    """Set a ``__Host-`` cookie: Secure, HttpOnly, SameSite=Strict, Path=/."""
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite="strict")


def current_session(request: Request, db: Database) -> ReviewSession:
    """The request's live session.

    Raises:
        NotSignedIn: no cookie, or an unknown or expired one.
    """
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise NotSignedIn()
    found = get_session(db, _digest(token))
    if found is None:
        raise NotSignedIn()
    return found


def check_csrf(request: Request, form_token: str | None, expected: str) -> None:
    """Refuse a form whose token is missing or wrong, or that came from another site.

    Raises:
        Forbidden: with a message that says to reload the page.
    """
    origin = request.headers.get("origin")
    if origin and origin != "null":
        if urlsplit(origin).netloc != request.headers.get("host", ""):
            raise Forbidden("the form came from another site; it was refused")
    if not form_token or not hmac.compare_digest(form_token.encode(), expected.encode()):
        raise Forbidden("the form's security token is missing or out of date; reload the "
                        "page and submit again")


def new_login_token() -> str:
    """A fresh token for the sign-in form and its cookie."""
    return secrets.token_urlsafe(32)


def plain_name(name: str) -> bool:
    """Whether a typed name could be a stored one: 1 to NAME_LENGTH characters, no spaces
    or control characters (PostgreSQL text cannot even hold a NUL)."""
    return 0 < len(name) <= NAME_LENGTH and not any(c.isspace() or ord(c) < 32 for c in name)


def lock_state(db: Database, settings: ReviewSettings, name: str) -> tuple[int, datetime | None]:
    """Recent failed sign-ins of a name and, when it is locked, until when.

    The caller waits ``slow_seconds`` itself (without holding a thread) once the count
    reaches ``slow_after``.
    """
    if not plain_name(name):
        return 0, None
    window = timedelta(minutes=settings.lock_minutes)
    failures, last = recent_login_failures(db, name, window)
    if failures >= settings.lock_after and last is not None:
        log.warning("sign-in refused: %r is locked after %d failures", name, failures)
        return failures, last + window
    return failures, None


def sign_in(db: Database, settings: ReviewSettings, name: str, password: str) -> LoginResult:
    """Check a name and password; on success open a session, else count a failure.

    Returns:
        ``LoginResult`` with the user and the new session's token, or empty for a wrong
        name or password. Throttling (``lock_state``) is checked by the caller first.
    """
    found = user_with_hash(db, name) if plain_name(name) else None
    if not verify_password(found[1] if found else None, password) or found is None:
        if plain_name(name):
            record_login_failure(db, name)
        if found is None:  # the typed "name" may be a password typed in the wrong box
            log.info("sign-in failed for a name that is not a user")
        else:
            log.info("sign-in failed for %r", name)
        return LoginResult()
    clear_login_failures(db, name)
    token = secrets.token_urlsafe(32)
    create_session(db, _digest(token), found[0].id, secrets.token_urlsafe(32),
                   timedelta(hours=settings.session_hours))
    log.info("signed in: %r (%s)", name, found[0].role)
    return LoginResult(user=found[0], token=token)


def sign_out(request: Request, db: Database) -> None:
    """End the request's session, if it has one."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        end_session(db, _digest(token))


def now() -> datetime:
    return datetime.now(timezone.utc)
