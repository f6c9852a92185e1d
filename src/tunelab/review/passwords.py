"""Password hashing for the review app: argon2id, with the argon2-cffi library's defaults
(RFC 9106's second recommended profile: 64 MiB, 3 passes), rehashed when they change.

This module knows nothing of users or HTTP: it turns passwords into hashes and checks them.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tunelab.errors import UsageError

MIN_PASSWORD_LENGTH = 12  # NIST SP 800-63B's floor for a password chosen by its user is 8; we ask 12
_HASHER = PasswordHasher()
# Verified when a name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY = _HASHER.hash("not a password of anyone")


def check_password_strength(password: str) -> None:
    """Refuse a password too short to stand a guessing attack.

    Raises:
        UsageError: shorter than ``MIN_PASSWORD_LENGTH``, or only spaces.
    """
    if len(password) < MIN_PASSWORD_LENGTH or not password.strip():
        raise UsageError(f"the password is {len(password)} characters; at least "
                         f"{MIN_PASSWORD_LENGTH} are needed",
                         hint="use a passphrase of a few words")


def hash_password(password: str) -> str:
    """The argon2id hash of a password (salted; never the same twice)."""
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; a None hash (no such user) takes as
    long as a real check and fails."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False
