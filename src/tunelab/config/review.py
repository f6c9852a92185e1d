"""Settings of `tunelab review serve`: where the review app listens and how it guards sign-in.

Defaults live here and nowhere else; the CLI builds one ``ReviewSettings`` from its flags.
This module knows nothing of HTTP or the database.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tunelab.config.serve import DEFAULT_HOST

DEFAULT_REVIEW_PORT = 8100  # beside `tunelab serve`'s 8000


class ReviewSettings(BaseModel):
    """The review app's address, session lifetime and sign-in throttling."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_REVIEW_PORT, ge=0, le=65535)  # 0: any free port (printed)
    db: str | None = None  # SQLAlchemy URL; None: SQLite under the tunelab home
    session_hours: float = Field(12.0, gt=0)  # a sign-in lasts this long
    lock_after: int = Field(10, gt=0)  # failed sign-ins for one name within the window lock it
    lock_minutes: float = Field(15.0, gt=0)  # the window, and how long a lock lasts
    slow_after: int = Field(3, ge=0)  # from this many failures on, each attempt waits
    slow_seconds: float = Field(1.0, ge=0)  # the wait per attempt once slowed
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")
