"""kill -9 during request logging: no committed row lost, the SQLite file never corrupt.

A child process writes rows through ``RequestLogWriter`` in a loop and prints how many
it knows were committed; after a few seconds it is killed with SIGKILL, mid-write. The
file must then pass ``PRAGMA integrity_check``, open (and migrate) cleanly, and hold at
least the last count the child printed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from tunelab.db import open_database, recent_requests

CHILD = Path(__file__).with_name("db_writer_child.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def test_kill_9_loses_no_committed_row_and_leaves_the_file_whole(tmp_path):
    path = tmp_path / "log.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    child = subprocess.Popen([sys.executable, str(CHILD), f"sqlite:///{path}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    counts: list[int] = []
    reader = threading.Thread(target=lambda: counts.extend(int(line) for line in child.stdout),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60  # the child's imports, on a busy machine
        while not counts and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert counts, f"the child committed nothing: {child.stderr.read() if child.poll() is not None else ''}"
        time.sleep(2.5)  # several more flushes, then kill it in the middle of writing
        assert child.poll() is None, child.stderr.read()
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    reader.join(timeout=10)
    assert child.returncode == -signal.SIGKILL
    last = counts[-1]
    assert last > 0 and counts == sorted(counts)

    conn = sqlite3.connect(path)  # the plain library, as any other reader would
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    (rows,) = conn.execute("SELECT count(*) FROM request_log").fetchone()
    conn.close()
    assert rows >= last, f"{last} rows were committed, {rows} are in the file"
    with open_database(f"sqlite:///{path}") as db:  # opens and migrates as usual
        newest = recent_requests(db, limit=1)[0]
        assert newest.request_id == f"chatcmpl-{rows - 1:06d}"  # no gap: rows in order
