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

This layer knows nothing of HTTP or of models: callers hand it rows, it stores them.
"""

from tunelab.db.database import Database, default_database_url, open_database, safe_url
from tunelab.db.requests import RequestLogWriter, RequestRecord, recent_requests
from tunelab.db.tables import NAME_LENGTH

__all__ = [
    "NAME_LENGTH",
    "Database",
    "RequestLogWriter",
    "RequestRecord",
    "default_database_url",
    "open_database",
    "recent_requests",
    "safe_url",
]
