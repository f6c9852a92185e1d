"""Writes request-log rows to a SQLite file until killed; prints ``written`` after each flush.

Run by tests/integration/test_db_kill.py as ``python db_writer_child.py URL``. Each line
on stdout is a count of rows the writer knows were committed (``written`` grows only
after a commit returned), printed as soon as it changes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for db_records

from db_records import make_record  # noqa: E402
from tunelab.db import RequestLogWriter, open_database  # noqa: E402

db = open_database(sys.argv[1])
writer = RequestLogWriter(db, flush_interval=0.1)
writer.start()
seen, i = 0, 0
while True:
    writer.write(make_record(i, prompt="x" * 2000))  # rows of a realistic size
    i += 1
    if writer.written != seen:
        seen = writer.written
        print(seen, flush=True)
    time.sleep(0.0005)
