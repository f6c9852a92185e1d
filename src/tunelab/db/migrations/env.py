"""Alembic's entry point: runs the revisions on the connection it is given.

Online mode only, on ``config.attributes["connection"]`` (``tunelab.db.database`` opens
it, inside a transaction). Logging is left as the caller set it up: no ``fileConfig``.
"""

from __future__ import annotations

from alembic import context

from tunelab.db.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - a misuse by a developer, not a user error
    raise RuntimeError("run the migrations through tunelab.db.database.alembic_config(connection)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying a table
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
