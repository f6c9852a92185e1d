"""The tunelab database: SQLAlchemy tables, Alembic migrations, sessions, the request log.

SQLite in WAL mode under the tunelab home is the embedded default (nothing to start);
PostgreSQL (``postgresql://...``) serves more than one server. ``open_database`` creates
or migrates the schema on every open, so callers never run migrations themselves.

    db = open_database()                      # or open_database("postgresql://...")
    writer = RequestLogWriter(db); writer.start()
    writer.write(record)                      # never waits on the database
    writer.close(); recent_requests(db, limit=10); db.close()

``NAME_LENGTH`` is the most characters a stored model name or user may hold; callers
refuse longer ones (the writer clips them only as a last resort, with a warning).

Feedback on responses (``tunelab.db.feedback``): ``write_feedback`` stores one, durably,
before it returns; ``rated_responses`` reads feedback joined with the logged responses.

This layer knows nothing of HTTP or of models: callers hand it rows, it stores them.
"""

from tunelab.db.database import Database, default_database_url, open_database, safe_url
from tunelab.db.feedback import (
    Feedback,
    FeedbackInput,
    FeedbackRefused,
    FeedbackWrite,
    RatedResponse,
    rated_responses,
    write_feedback,
)
from tunelab.db.requests import RequestLogWriter, RequestRecord, recent_requests
from tunelab.db.tables import NAME_LENGTH

__all__ = [
    "NAME_LENGTH",
    "Database",
    "Feedback",
    "FeedbackInput",
    "FeedbackRefused",
    "FeedbackWrite",
    "RatedResponse",
    "RequestLogWriter",
    "RequestRecord",
    "default_database_url",
    "open_database",
    "rated_responses",
    "recent_requests",
    "safe_url",
    "write_feedback",
]
