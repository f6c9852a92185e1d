"""Helpers of the database tests (tests/unit/db, tests/integration/test_db_*): records to
write, the columns to expect, processes that open one database at once."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tunelab.db import RequestRecord

# The review app's tables (migration 0003).
REVIEW_TABLES = {"review_user", "review_session", "review_login_failure", "review_project",
                 "review_guideline", "review_item", "review_assignment", "review_adjudication",
                 "review_export"}
COLUMNS = {"id", "request_id", "created_at", "endpoint", "model", "user", "prompt", "answer",
           "prompt_tokens", "completion_tokens", "latency_ms", "time_to_first_token_ms",
           "finish_reason", "status_code", "stream", "filtered", "experiment", "variant"}
T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def make_record(i: int, **changes) -> RequestRecord:
    """Record ``i`` of a test: distinct id and time, every field set (``changes`` override)."""
    record = RequestRecord(
        request_id=f"chatcmpl-{i:06d}", created_at=T0 + timedelta(seconds=i),
        endpoint="chat.completions", model="tiny-run", user=f"user-{i % 3}",
        prompt='[{"role": "user", "content": "Hello ' + str(i) + ' \u00e9\u4e16"}]',
        answer=f"Answer {i}", prompt_tokens=10 + i, completion_tokens=5, latency_ms=12.5 + i,
        time_to_first_token_ms=3.25, finish_reason="stop", status_code=200, stream=i % 2 == 0,
        filtered=None)
    return replace(record, **changes)


def private_record(i: int) -> RequestRecord:
    """A row of a server with ``log_text: false``: counts and timings, no text."""
    return make_record(i, prompt=None, answer=None, user=None, time_to_first_token_ms=None,
                       finish_reason="length", status_code=429, filtered="pii,blocklist")


def assert_concurrent_opens_succeed(url: str, processes: int = 3) -> None:
    """Start ``processes`` Pythons that each ``open_database(url)`` at the same moment."""
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(src), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # each says it is ready, then waits for a file to appear: the opens begin together
    go = Path(tempfile.gettempdir()) / f"tunelab-go-{uuid.uuid4().hex}"
    code = ("import os, sys, time\nfrom tunelab.db import open_database\n"
            "import sqlalchemy.dialects.postgresql.psycopg, alembic.runtime.migration\n"
            "print('ready', flush=True)\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.002)\n"
            "open_database(sys.argv[1]).close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(processes)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n", \
                p.communicate(timeout=60)[1]
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
        go.unlink(missing_ok=True)
    failed = [err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode != 0]
    assert not failed, "\n".join(failed)
