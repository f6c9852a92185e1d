"""Feedback writes: `POST /v1/feedback` from 20 concurrent writers, on SQLite and PostgreSQL.

    python benchmarks/feedback_writes.py                  # 20 writers, 30 s per backend
    python benchmarks/feedback_writes.py --seconds 10 --json

What runs, per backend, one after the other (nothing else should run on the machine):

1. a throwaway database: a SQLite file in a temporary folder, or a PostgreSQL cluster
   made with the distribution's binaries (``/usr/lib/postgresql/<version>/bin``:
   ``initdb``, ``pg_ctl``; as root they run as the ``postgres`` user), trust
   authentication on a free loopback port, removed afterwards (as ``tests/pg.py`` does);
2. ``tunelab serve MODEL --db URL`` in a child process on a free loopback port, and
   ``--responses`` chat answers (``max_tokens`` 2) to give feedback on;
3. ``--writers`` threads, each a keep-alive HTTP connection, posting feedback back to
   back (a closed loop) for ``--seconds``: every write has its own ``Idempotency-Key``;
   three in four make a new row (a new user), one in four updates the writer's previous
   row; a write whose connection fails is retried with the same key (at most 3 times);
4. the server is stopped, the database read back directly: an acknowledged write is
   *lost* when its row is missing or holds other values (unless a later write of the
   same writer, sent but not acknowledged, replaced it).

Figures per backend: acknowledged writes per second, latency p50/p99 of acknowledged
writes (client side: request sent to response read), 5xx responses, other failures,
lost writes. The script exits 1 when any backend has a 5xx or a lost write.

The writer and the check are also what ``tests/integration/test_serve_feedback.py`` runs
(the durability, load and SIGKILL tests), so the benchmark's code is tested.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import platform
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from _requires import require

KEY = "bench-key"
PG_USER = "postgres"
_URL = re.compile(r"at (http://127\.0\.0\.1:(\d+))/v1")
RETRIES = 3  # a write whose connection fails is sent again with the same key


# --- the writers --------------------------------------------------------------------------

@dataclass
class Write:
    response_id: str
    user: str
    key: str
    rating: str
    score: int
    comment: str | None


@dataclass
class WriterStats:
    """What the writers saw. ``last`` holds, per (response, user), the last acknowledged
    write; ``unacked`` the writes sent and never acknowledged (the server may hold them)."""

    seconds: float = 0.0
    acked: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    failures: int = 0  # requests that got no HTTP answer (retried or given up)
    last: dict[tuple[str, str], Write] = field(default_factory=dict)
    unacked: list[Write] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def _post(conn: http.client.HTTPConnection, w: Write, key: str) -> tuple[int, dict]:
    body = {"response_id": w.response_id, "user": w.user, "rating": w.rating, "score": w.score}
    if w.comment is not None:
        body["comment"] = w.comment
    conn.request("POST", "/v1/feedback", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}",
                          "Idempotency-Key": w.key})
    resp = conn.getresponse()
    data = resp.read()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, {}


def run_writers(port: int, response_ids: list[str], writers: int = 20, seconds: float = 30.0,
                key: str = KEY, timeout: float = 30.0) -> WriterStats:
    """``writers`` threads posting feedback to ``127.0.0.1:port`` for ``seconds``.

    A thread ends at the deadline, or when a write still gets no answer after ``RETRIES``
    tries (the server is gone). Returns what they saw, merged.
    """
    run = uuid.uuid4().hex[:8]
    stats = WriterStats()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def writer(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        mine: dict[tuple[str, str], Write] = {}
        statuses: Counter = Counter()
        latencies: list[float] = []
        failures, previous, n = 0, None, 0
        unacked: list[Write] = []
        while time.monotonic() < deadline:
            if n % 4 == 3 and previous is not None:  # an update of this writer's last row
                rid, user = previous.response_id, previous.user
            else:
                rid, user = response_ids[(t * 7 + n) % len(response_ids)], f"{run}-w{t}-{n}"
            w = Write(rid, user, f"{run}-{t}-{n}", "up" if (t + n) % 2 else "down",
                      1 + (t + n) % 5, f"note {t}-{n}" if n % 3 == 0 else None)
            n += 1
            status = None
            for attempt in range(RETRIES):
                started = time.perf_counter()
                try:
                    status, _ = _post(conn, w, key)
                    break
                except (OSError, http.client.HTTPException):
                    failures += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                    time.sleep(0.2 * (attempt + 1))
            if status is None:  # no answer: the server is gone; this write may be stored
                unacked.append(w)
                break
            statuses[status] += 1
            if status == 200:
                latencies.append(time.perf_counter() - started)
                mine[(rid, user)] = previous = w
        conn.close()
        with lock:
            stats.acked += len(latencies)
            stats.latencies += latencies
            stats.statuses.update(statuses)
            stats.failures += failures
            stats.last.update(mine)
            stats.unacked += unacked

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(writers)]
    started = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + RETRIES * (timeout + 1) + 10)
    stats.seconds = time.monotonic() - started
    return stats


def lost_writes(db_url: str, stats: WriterStats) -> list[Write]:
    """The acknowledged writes the database does not hold (read directly, after the run).

    A (response, user) row holds the last acknowledged write to it, or a later one that
    was sent and never acknowledged; anything else (no row, other values) is lost.
    """
    from tunelab.db import open_database
    from tunelab.db.feedback import all_feedback

    with open_database(db_url) as db:
        rows = {(f.response_id, f.user): f for f in all_feedback(db)}
    later = {(w.response_id, w.user): w.key for w in stats.unacked}
    lost = []
    for pair, w in stats.last.items():
        row = rows.get(pair)
        if row is not None and pair in later and row.idempotency_key == later[pair]:
            continue  # replaced by a later write the server stored but could not answer
        if row is None or (row.idempotency_key, row.rating, row.score) != (w.key, w.rating, w.score):
            lost.append(w)
    return lost


def make_responses(url: str, model: str, n: int, key: str = KEY) -> list[str]:
    """``n`` chat answers from the server at ``url``: their ids."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)
    return [client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"ticket {i}: where is my parcel?"}],
        max_tokens=2, temperature=0).id for i in range(n)]


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


# --- a server and a throwaway PostgreSQL -------------------------------------------------

@contextmanager
def serve(model: str, db_url: str, folder: Path, timeout: float = 300) -> Iterator[tuple[str, int]]:
    """``tunelab serve MODEL --db URL`` on a free loopback port: yields its URL and port."""
    env = {**os.environ, "TUNELAB_API_KEYS": KEY, "HF_HUB_OFFLINE": "1"}
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tunelab", "serve", model, "--port", "0",
                                 "--db", db_url], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while (m := _URL.search(log_path.read_text(errors="replace"))) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {log_path}")
            time.sleep(0.2)
        yield m.group(1), int(m.group(2))
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL cluster in a temporary folder on a free loopback port: yields a URL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) for x in Path(p).parents[1].name.split(".") if x.isdigit()])
    if not found:
        raise SystemExit("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb); "
                         "apt-get install postgresql, or pass --backends sqlite")
    bindir = Path(found[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="tunelab-bench-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(PG_USER)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data = folder / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER,
                                        "--auth=trust", "--encoding=UTF8", "--locale=C"]),
                       check=True, capture_output=True, timeout=120)
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l",
                                        str(folder / "server.log"), "-w", "-t", "60", "-o",
                                        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
                                        "start"]), check=True, capture_output=True, timeout=120)
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute('CREATE DATABASE "tunelab_bench"')
        yield f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/tunelab_bench"
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m",
                                        "fast", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


# --- the benchmark ------------------------------------------------------------------------

@contextmanager
def _database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'feedback.db'}"
    elif backend == "postgresql":
        with throwaway_postgres() as url:
            yield url
    else:
        raise SystemExit(f"unknown backend {backend!r}: give sqlite and/or postgresql")


def _backend(name: str, model: str, a: argparse.Namespace,
             log: Callable[[str], None]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="tunelab-bench-fb-"))
    try:
        with _database(name, folder) as db_url:
            with serve(model, db_url, folder) as (url, port):
                log(f"{name}: {a.responses} responses to rate ...")
                ids = make_responses(url, model, a.responses)
                time.sleep(1.5)  # the request log's next flush: no write waits for it
                run_writers(port, ids, a.writers, 2.0)  # warm-up (pools, caches)
                log(f"{name}: {a.writers} writers for {a.seconds:.0f} s ...")
                stats = run_writers(port, ids, a.writers, a.seconds)
            lost = lost_writes(db_url, stats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"backend": name, "writers": a.writers, "seconds": round(stats.seconds, 2),
            "acknowledged": stats.acked,
            "writes_per_second": round(stats.acked / stats.seconds, 1),
            "latency_p50_ms": round(percentile(stats.latencies, 0.5) * 1000, 1),
            "latency_p99_ms": round(percentile(stats.latencies, 0.99) * 1000, 1),
            "server_errors": stats.server_errors,
            "other_statuses": {str(k): v for k, v in stats.statuses.items() if k != 200 and k < 500},
            "connection_failures": stats.failures, "lost": len(lost)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="the served model (default: tunelab's default model)")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--writers", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0, help="per backend")
    p.add_argument("--responses", type=int, default=50, help="responses to give feedback on")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    require(["tunelab", "openai"], 'pip install -e ".[dev]"  (or: make install-dev)')
    from tunelab.config.schema import DEFAULT_MODEL

    model = a.model or DEFAULT_MODEL
    results = [_backend(b.strip(), model, a, lambda m: print(m, file=sys.stderr))
               for b in a.backends.split(",")]
    ok = all(r["server_errors"] == 0 and r["lost"] == 0 for r in results)
    out = {"model": model, "machine": platform.machine(), "cpus": os.cpu_count(),
           "load_average": [round(x, 2) for x in os.getloadavg()], "results": results, "ok": ok}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{'backend':<11} {'writers':>7} {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'acked':>6} {'5xx':>4} {'lost':>4}")
        for r in results:
            print(f"{r['backend']:<11} {r['writers']:>7} {r['writes_per_second']:>9} "
                  f"{r['latency_p50_ms']:>7} {r['latency_p99_ms']:>7} {r['acknowledged']:>6} "
                  f"{r['server_errors']:>4} {r['lost']:>4}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
