"""The request log: one ``RequestRecord`` per request, written off the request path.

``RequestLogWriter`` owns a thread and a queue. ``write`` only counts and queues (it
never waits on the database); the thread commits what is pending in one transaction at
least every ``flush_interval`` seconds, sooner when ``FLUSH_ROWS`` rows wait, so a
killed process loses at most the rows of the last interval, never a committed one (the
database's own journal keeps the file whole). ``written`` counts committed rows: it
grows only after a commit has returned.

When the database is down or locked, the flush fails, is logged (the URL without its
password and the driver's reason; never the prompt or answer text, never SQL
parameters), and the rows are kept for the next flush. At most ``max_pending`` rows are
held (queued or kept); beyond that ``write`` drops the record, counts it in ``dropped``
and logs that once until the writer catches up. A row that the database refuses on its
own (not a lost connection) is found by writing that batch row by row, and dropped, so
one bad row cannot stop the log. Values are made storable first: a NUL character
(PostgreSQL text cannot hold one) becomes U+FFFD, and an overlong short field is clipped
to its column, with a warning (naming the field and the lengths, never the value): the
server refuses such values before they reach the log, so a clip is a bug upstream.

``recent_requests`` reads the newest rows back, for the next issues and for tests.

This module knows nothing of HTTP or of models: a record is strings, numbers and times.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from tunelab.db.database import Database
from tunelab.db.tables import ID_LENGTH, NAME_LENGTH, SHORT_LENGTH, RequestLogRow
from tunelab.errors import DatabaseError, UsageError

log = logging.getLogger(__name__)

FLUSH_ROWS = 500  # flush early when this many rows wait, before the interval is up
# A lost connection or a locked file: keep the rows, try again at the next flush.
_UNREACHABLE = (OperationalError, InterfaceError, DisconnectionError)
_CLIP = {"request_id": ID_LENGTH, "endpoint": SHORT_LENGTH, "model": NAME_LENGTH,
         "user": NAME_LENGTH, "finish_reason": SHORT_LENGTH, "filtered": NAME_LENGTH,
         "experiment": NAME_LENGTH, "variant": NAME_LENGTH}
_STOP = object()
_FLUSH = object()  # a request to commit what is pending now (the feedback route waits on it)


@dataclass
class RequestRecord:
    """One request and its response: one row of the table ``request_log``.

    Attributes:
        request_id: the response's id, ``"chatcmpl-..."`` or ``"cmpl-..."``.
        created_at: when the request arrived, in UTC (a naive time is taken as UTC).
        endpoint: ``"chat.completions"`` or ``"completions"``.
        model: the model the request named.
        user: the request's ``user`` field, if any.
        prompt: the messages as JSON (chat) or the text (completions); ``None`` when
            the server keeps no text (``log_text: false``).
        answer: the answer text; ``None`` when the server keeps no text.
        prompt_tokens: tokens in the rendered prompt.
        completion_tokens: tokens generated.
        latency_ms: from arrival to the last byte of the response, in milliseconds.
        time_to_first_token_ms: from arrival to the first generated token; ``None``
            when none was generated.
        finish_reason: ``stop``, ``length``, ``cancelled`` or ``error``; ``None`` for a
            request refused before generation.
        status_code: the HTTP status answered (200, 400, 429, ...).
        stream: whether the answer was streamed.
        filtered: the output filters that changed the answer, comma-separated.
        experiment: the experiment the request named, if it named one; ``model`` is
            then the served model of the variant that answered.
        variant: the experiment's variant that answered.
    """

    request_id: str
    created_at: datetime
    endpoint: str
    model: str
    user: str | None
    prompt: str | None
    answer: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    time_to_first_token_ms: float | None
    finish_reason: str | None
    status_code: int
    stream: bool
    filtered: str | None
    experiment: str | None = None
    variant: str | None = None


def _row(record: RequestRecord) -> dict[str, Any]:
    """The column values of a record, made storable on both backends."""
    row = asdict(record)
    for key, value in row.items():
        if isinstance(value, str):
            value = value.replace("\x00", "\ufffd")
            if key in _CLIP and len(value) > _CLIP[key]:
                # a last resort: callers check lengths (``NAME_LENGTH``) before they log
                log.warning("request log: %s of %s clipped from %d to %d characters",
                            key, record.request_id[:ID_LENGTH], len(value), _CLIP[key])
                value = value[:_CLIP[key]]
            row[key] = value
    return row


class RequestLogWriter:
    """Writes ``RequestRecord`` rows from a thread of its own, in one transaction per flush.

    Args:
        db: the open database.
        flush_interval: seconds; pending rows are committed at least this often.
        max_pending: rows held at most while they wait (or while the database is down);
            more are dropped and counted in ``dropped``.

    Attributes:
        written: rows committed so far (grows only after a commit returned).
        dropped: records given up: the writer was full or closed, the database refused
            the row, or it was still down when the writer closed.

    Raises:
        UsageError: ``flush_interval`` is not positive or ``max_pending`` is below 1.
    """

    def __init__(self, db: Database, flush_interval: float = 1.0,
                 max_pending: int = 10000) -> None:
        if not flush_interval > 0:
            raise UsageError(f"flush_interval must be above 0 seconds, got {flush_interval}")
        if max_pending < 1:
            raise UsageError(f"max_pending must be at least 1, got {max_pending}")
        self.db = db
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.written = 0
        self.dropped = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _held, _closed, dropped, _warned_full
        self._held = 0  # accepted, not yet committed or given up
        self._closed = False
        self._warned_full = False
        self._failing = False  # the last flush failed: logged once, until one succeeds
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Rows accepted and not yet committed."""
        return self._held

    def start(self) -> None:
        """Start the writing thread (a daemon; ``close`` flushes and stops it)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tunelab-request-log",
                                            daemon=True)
            self._thread.start()

    def write(self, record: RequestRecord) -> None:
        """Queue one record; never waits on the database.

        A full or closed writer drops the record, counts it in ``dropped`` and logs
        that once (until the writer has room again).
        """
        with self._lock:
            if not self._closed and self._held < self.max_pending:
                self._held += 1
                self._queue.put(record)
                return
            self.dropped += 1
            warn, self._warned_full = not self._warned_full, True
            why = "closed" if self._closed else f"holding {self._held} rows (max_pending)"
        if warn:
            log.warning("request log: dropping rows, the writer is %s", why)

    def flush_soon(self) -> None:
        """Ask the thread to commit what is pending now rather than at the interval's end.

        Never waits. A database that just failed is still retried only on the interval.
        """
        self._queue.put(_FLUSH)

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is pending and stop the thread.

        Args:
            timeout: seconds to wait for the last flush; rows still pending after it
                are lost with the process (and logged).
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self.start()  # a writer never started still writes what it was given
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("request log: %d row(s) not written %.1f s after closing",
                        self._held, timeout)

    def _run(self) -> None:
        pending: list[RequestRecord] = []
        next_flush = time.monotonic() + self.flush_interval
        stopping, healthy = False, True
        while not stopping:
            items = []
            try:
                items.append(self._queue.get(timeout=max(next_flush - time.monotonic(), 0)))
                while True:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            asked = False
            for item in items:
                if item is _STOP:
                    stopping = True
                elif item is _FLUSH:
                    asked = True
                else:
                    pending.append(item)
            due = time.monotonic() >= next_flush or (asked and healthy)
            # a database that just failed is retried on the interval, not on every row
            if pending and (due or stopping or (healthy and len(pending) >= FLUSH_ROWS)):
                healthy = self._flush(pending)
                next_flush = time.monotonic() + self.flush_interval
            elif due:
                next_flush = time.monotonic() + self.flush_interval
        if pending:
            log.warning("request log: %d row(s) lost: the database %s was unreachable "
                        "when the writer closed", len(pending), self.db.safe_url)
            self._give_up(len(pending))
            pending.clear()

    def _flush(self, pending: list[RequestRecord]) -> bool:
        """Commit ``pending`` in one transaction; False (rows kept) if the database is down."""
        try:
            self._insert(pending)
        except _UNREACHABLE as e:
            self._log_unreachable(len(pending), e)
            return False
        except Exception as e:  # a row the database refuses: find it
            log.warning("request log: a batch of %d row(s) was refused (%s); writing them "
                        "one by one", len(pending), type(e).__name__)
            return self._flush_one_by_one(pending)
        self._committed(len(pending))
        pending.clear()
        return True

    def _flush_one_by_one(self, pending: list[RequestRecord]) -> bool:
        while pending:
            try:
                self._insert(pending[:1])
            except _UNREACHABLE as e:
                self._log_unreachable(len(pending), e)
                return False
            except Exception as e:  # never the values: they hold prompts
                log.error("request log: dropping a row the database refuses (%s)",
                          type(e).__name__)
                self._give_up(1)
            else:
                self._committed(1)
            pending.pop(0)
        return True

    def _insert(self, records: list[RequestRecord]) -> None:
        with self.db.engine.begin() as connection:
            connection.execute(insert(RequestLogRow), [_row(r) for r in records])

    def _committed(self, n: int) -> None:
        with self._lock:
            self._held -= n
            self.written += n
            self._warned_full = False
        if self._failing:
            self._failing = False
            log.info("request log: writing to %s again", self.db.safe_url)

    def _give_up(self, n: int) -> None:
        with self._lock:
            self._held -= n
            self.dropped += n

    def _log_unreachable(self, n: int, error: Exception) -> None:
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        orig = error.orig if isinstance(error, DBAPIError) else error
        lines = str(orig).strip().splitlines()
        reason = lines[0] if lines else type(orig).__name__
        log.log(level, "request log: cannot write %d row(s) to %s (%s); keeping them, "
                "retrying every %.1f s", n, self.db.safe_url, reason, self.flush_interval)


def recent_requests(db: Database, limit: int = 100) -> list[RequestRecord]:
    """The newest rows of the request log, newest first.

    Args:
        db: the open database.
        limit: rows at most.

    Returns:
        Up to ``limit`` records, in the reverse order of their commit.

    Raises:
        DatabaseError: the database cannot be read.
    """
    names = [f.name for f in fields(RequestRecord)]
    try:
        with db.session() as session:
            rows = session.scalars(select(RequestLogRow)
                                   .order_by(RequestLogRow.id.desc()).limit(limit)).all()
            return [RequestRecord(**{name: getattr(row, name) for name in names})
                    for row in rows]
    except DBAPIError as e:
        lines = str(e.orig).strip().splitlines()
        raise DatabaseError(f"cannot read the request log in {db.safe_url}: "
                            f"{lines[0] if lines else type(e.orig).__name__}",
                            hint="check that the database server is running") from None
