"""The one exception tree of tunelab.

Every error a user can cause is a ``TunelabError``: the CLI turns it into a message and
an exit code, never a traceback. Anything else escaping is a bug in tunelab.

::

    TunelabError                 base; ``hint`` says what to do next
    ├── ConfigError              the run config is invalid (all problems at once)
    ├── UsageError               a value given to a command or a call is out of range
    ├── DataError                input data is unreadable or invalid (per-line findings)
    ├── ModelError               a model cannot be found, fetched or loaded
    │   ├── ModelNotFoundError   a model name resolves to nothing (names the pull command)
    │   └── UnsafeModelError     pickle weights or remote code that were not allowed
    ├── StoreError               the model store or a run folder is unusable
    ├── TrainingError            training cannot start or continue (bad state, NaN loss)
    └── DatabaseError            the database cannot be opened, migrated or written

This module knows nothing of the CLI: exit codes are chosen in ``tunelab.cli.exits``.
"""

from __future__ import annotations


class TunelabError(Exception):
    """Base of every error a user can cause.

    Args:
        message: what happened, with the offending value.
        hint: the next action for the user, printed on its own line.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(TunelabError):
    """The run config is invalid; ``problems`` lists each as ``path: what is wrong``."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the config{where}:\n{lines}")
        self.problems = problems


class UsageError(TunelabError, ValueError):
    """A value given to a command or a call is out of range (``max_new_tokens=0``).

    Also a ``ValueError``: library callers that caught the engine's ``ValueError`` keep
    working.
    """


class DataError(TunelabError):
    """Input data is invalid; ``findings`` holds one line per problem (file:line field: what)."""

    def __init__(self, message: str, findings: list[str] | None = None,
                 hint: str | None = None) -> None:
        self.findings = findings or []
        if self.findings:
            shown = self.findings[:50]
            more = len(self.findings) - len(shown)
            body = "\n".join(f"  {f}" for f in shown)
            if more > 0:
                body += f"\n  ... and {more} more"
            message = f"{message}\n{body}"
        super().__init__(message, hint)


class ModelError(TunelabError):
    """A model cannot be found, fetched or loaded."""


class ModelNotFoundError(ModelError):
    """A model reference resolves to nothing."""


class UnsafeModelError(ModelError):
    """Loading would run untrusted code: pickle weights, or remote code not allowed."""


class StoreError(TunelabError):
    """The model store or a run folder is missing, incomplete or unwritable."""


class TrainingError(TunelabError):
    """Training cannot start or continue."""


class DatabaseError(TunelabError):
    """The database (the request log) cannot be opened, migrated or written.

    The message names the URL without its password.
    """
