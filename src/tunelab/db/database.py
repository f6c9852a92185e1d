"""Opening the tunelab database: SQLite (embedded, the default) or PostgreSQL.

``open_database`` turns a URL into a ``Database`` that is ready to use: for SQLite the
file's folder is made and every connection is set to WAL journaling (readers never block
the writer), ``synchronous=FULL`` (a committed transaction is on disk before the commit
returns, so not even a power cut loses it; NORMAL would survive a killed process only)
and a busy timeout; then Alembic brings the schema to the newest revision (``upgrade
head``: a no-op on an up-to-date database, so it runs on every open). Two processes
opening one database at once take turns: SQLite's write lock (``BEGIN IMMEDIATE``),
PostgreSQL's advisory lock; threads of one process take turns on a lock of their own.

``postgresql://`` and ``postgres://`` URLs use the psycopg 3 driver (the one installed).
Every failure (a malformed URL, an unknown backend, a server that cannot be reached, a
database written by a newer tunelab) is a ``DatabaseError`` whose message shows the URL
without its password. SQL parameters never appear in error messages or logs
(``hide_parameters``): they carry prompt text.

This layer knows nothing of HTTP or of models: it stores rows that callers give it.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tunelab.errors import DatabaseError
from tunelab.files import tunelab_home

log = logging.getLogger(__name__)

DB_FILE = "tunelab.db"  # the default database's file name in the tunelab home
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000  # wait this long for another writer's lock, then fail
PG_CONNECT_TIMEOUT_S = 10  # an unreachable host fails after this, not after minutes
_PG_MIGRATION_LOCK = 0x74756E656C6162  # pg_advisory_xact_lock key ("tunelab" in ASCII)
# Alembic runs through module-level proxies (``alembic.context``, ``alembic.op``): two
# migrations in one process at once would share them. Processes take turns in the database.
_MIGRATING = threading.Lock()
# One lock per SQLite engine: the writers of one process take turns (write_transaction).
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()
_URL_HINT = "write it as sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DBNAME"


def default_database_url() -> str:
    """The URL of the default database: a SQLite file in the tunelab home.

    Returns:
        ``sqlite:///<home>/tunelab.db``, the home being ``$TUNELAB_HOME`` when set, else
        the per-user cache folder.
    """
    return f"sqlite:///{(tunelab_home() / DB_FILE).as_posix()}"


def safe_url(url: str) -> str:
    """A database URL fit for messages and logs: the password is replaced by ``***``.

    Args:
        url: any string a user gave as a database URL (it need not parse).

    Returns:
        The URL with its password (and a ``password=`` query value) hidden; for a
        string that does not parse, all that stands before its last ``@``.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None
    if parsed is None or "@" in (parsed.host or ""):  # an unescaped "@" in the password
        # a malformed URL: whatever stands before its last "@" may hold credentials
        return re.sub(r"^([A-Za-z0-9+.-]*:/*)?.*@", r"\1***@", url)
    if "password" in parsed.query:
        parsed = parsed.difference_update_query(["password"])
    return parsed.render_as_string(hide_password=True)


class Database:
    """An open database: the SQLAlchemy engine and a way to run a unit of work.

    Attributes:
        url: the URL it was opened with (it may hold a password: show ``safe_url``).
        safe_url: the URL without its password, for messages and logs.
        backend: ``"sqlite"`` or ``"postgresql"``.
        engine: the SQLAlchemy ``Engine`` (a pool of connections; thread-safe).
    """

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.safe_url = safe_url(url)
        self.backend = engine.dialect.name
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A ``Session`` for one unit of work: committed when the block ends, rolled
        back if it raises."""
        with self._sessions() as session:
            yield session
            session.commit()

    def close(self) -> None:
        """Close every pooled connection (the database itself stays as it is)."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.safe_url!r})"


@contextmanager
def write_transaction(db: Database) -> Iterator[Connection]:
    """A transaction for a read-then-write that must not interleave with another writer.

    On SQLite it begins ``IMMEDIATE`` (the write lock is taken first, so what it reads
    cannot go stale before it writes), after the threads of this process took turns on a
    lock of their own: SQLite's busy handler makes waiting writers sleep and poll (up to
    100 ms a nap), a thread lock hands over at once. On PostgreSQL it is a plain
    transaction: callers rely on unique constraints and row locks (``FOR UPDATE``).

    Yields:
        The connection, inside the transaction (committed on a clean exit).
    """
    if db.backend != "sqlite":
        with db.engine.connect() as conn, conn.begin():
            yield conn
        return
    with _LOCKS_LOCK:
        turn = _SQLITE_WRITERS.setdefault(db.engine, threading.Lock())
    with turn, db.engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def alembic_config(connection: Connection) -> Config:
    """An Alembic ``Config`` for the package's migrations, on an open connection.

    Args:
        connection: where the migrations run (``env.py`` reads it from ``attributes``).

    Returns:
        A config for ``alembic.command`` functions; no ``alembic.ini`` is read.
    """
    config = Config()
    # configparser interpolates "%": a path with one must double it
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def open_database(url: str | None = None) -> Database:
    """Open (and create, or migrate to the newest schema) the tunelab database.

    Args:
        url: a SQLAlchemy URL, ``sqlite:///PATH`` or ``postgresql://USER:PASSWORD@HOST/DB``;
            ``default_database_url()`` when omitted.

    Returns:
        The open ``Database``, its schema at the newest revision.

    Raises:
        DatabaseError: the URL is malformed or names another backend, the SQLite
            folder cannot be made, the server cannot be reached or refuses the login,
            or the database was migrated by a newer tunelab. The message names the URL
            without its password.
    """
    raw = url or default_database_url()
    shown = safe_url(raw)
    parsed = _parse(raw, shown)
    engine = _create_engine(parsed, shown)
    try:
        _migrate(engine)
    except DBAPIError as e:
        engine.dispose()
        raise DatabaseError(f"cannot open the database {shown}: {_reason(e, parsed)}",
                            hint=_open_hint(parsed)) from None
    except CommandError as e:
        engine.dispose()
        raise DatabaseError(
            f"cannot migrate the database {shown}: {e}",
            hint="the database was changed by a newer tunelab; upgrade tunelab, "
                 "or use another database") from None
    except SQLAlchemyError as e:
        engine.dispose()
        raise DatabaseError(f"cannot migrate the database {shown}: {type(e).__name__}",
                            hint=_open_hint(parsed)) from None
    return Database(raw, engine)


def _parse(raw: str, shown: str) -> URL:
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError):
        # the parser's own message repeats the whole string, password included
        raise DatabaseError(f"{shown!r} is not a database URL", hint=_URL_HINT) from None
    if "@" in (parsed.host or ""):
        raise DatabaseError(f"the database URL {shown} has an \"@\" in its password",
                            hint="write each \"@\" in the password as %40") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":  # the scheme libpq and Heroku accept
        backend = "postgresql"
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(f"the database {shown} is {backend!r}; tunelab stores its "
                            "data in SQLite or PostgreSQL", hint=_URL_HINT)
    if backend == "postgresql" and (not driver or parsed.drivername.startswith("postgres+")):
        # psycopg 3 is the driver installed; SQLAlchemy 2 no longer knows "postgres"
        parsed = parsed.set(drivername=f"postgresql+{driver or 'psycopg'}")
    if backend == "postgresql" and not parsed.database:
        raise DatabaseError(f"the database URL {shown} names no database", hint=_URL_HINT)
    if backend == "sqlite":
        path = parsed.database or ""
        if path in ("", ":memory:") or "mode=memory" in str(parsed.query):
            raise DatabaseError(
                f"the database {shown} is in memory; the request log writes from a thread "
                "of its own, which would see another, empty database",
                hint="give a file: sqlite:///PATH")
        if not path.startswith("file:"):
            try:
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DatabaseError(
                    f"cannot make the folder of the database {shown}: {e.strerror}",
                    hint="set TUNELAB_HOME to a writable folder, or give another "
                         "database URL") from None
    return parsed


def _create_engine(parsed: URL, shown: str) -> Engine:
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() != "sqlite" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    try:
        engine = create_engine(parsed, hide_parameters=True, pool_pre_ping=True,
                               connect_args=connect_args)
    except (NoSuchModuleError, ImportError, ArgumentError) as e:
        raise DatabaseError(f"cannot use the database {shown}: {type(e).__name__}",
                            hint=_URL_HINT) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own transaction handling starts transactions late and runs
    # DDL outside them; handing it to SQLAlchemy (the "begin" hook) makes a migration
    # and a flush each one transaction (SQLAlchemy's documented pysqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a filesystem without shared memory
            log.warning("SQLite kept journal_mode=%s instead of WAL", mode)
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN (migrations: two openers take turns)
    mode = connection.get_execution_options().get("sqlite_begin", "")
    connection.exec_driver_sql(f"BEGIN {mode}".strip())


def _migrate(engine: Engine) -> None:
    with _MIGRATING, engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.execution_options(sqlite_begin="IMMEDIATE")
        with connection.begin():
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _PG_MIGRATION_LOCK})
            command.upgrade(alembic_config(connection), "head")


def _reason(error: DBAPIError, parsed: URL) -> str:
    """The driver's first line (why it failed), never the statement or its parameters."""
    lines = str(error.orig).strip().splitlines()
    reason = lines[0] if lines else type(error.orig).__name__
    if parsed.password:
        reason = reason.replace(str(parsed.password), "***")
    return reason


def _open_hint(parsed: URL) -> str:
    if parsed.get_backend_name() == "sqlite":
        return "check that the file is a SQLite database in a writable folder, " \
               "or give another database URL"
    return "check that the server is running and reachable, and the URL's user, " \
           "password and database name; create the database first (createdb)"
