"""A real `tunelab review serve` process for tests, its users and items, and a raw HTTP client.

``start_review_server`` runs ``python -m tunelab review serve --port 0`` on 127.0.0.1 with
its SQLite database, home and log in a test folder, and waits (bounded) for the line
``review app at http://127.0.0.1:PORT/``. Users and projects are made with the CLI
(``--password-stdin``), as an admin would (run in this process: ``tunelab``). Items come from review sheets in the shape
``tunelab eval --review`` writes (``review.csv`` + ``review_key.json``), added with
``tunelab review add``.

``WebClient`` is a cookie-keeping client over ``http.client``:
the app's cookies are ``__Host-`` and ``Secure``, which httpx will not send over
``http://``; here the ``Cookie`` header is written by hand, as a browser on the loopback
address does. Statuses and headers are returned exactly as sent (no redirects followed).
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

SRC = Path(__file__).resolve().parents[1] / "src"
_READY = re.compile(r"review app at (http://127\.0\.0\.1:(\d+))/")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
GUIDELINE = """# Judging answers

* **Preferred**: pick the answer that is correct, complete and polite. Pick *tie* only
  when neither is better.
* **Verdict**: *good* when the answer is right and helpful; *bad* otherwise.
* **Correction**: when the answer is wrong, write the right one in a sentence.
"""


def review_env(folder: Path) -> dict[str, str]:
    """The environment of the server and of the CLI calls: a home of its own in ``folder``."""
    return {**os.environ, "TUNELAB_HOME": str(folder / "home"), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def tunelab(*args: str, stdin: str = "") -> str:
    """Run the `tunelab` command line in this process (``tunelab.cli.main.main``, stdin
    given); a non-zero exit fails with its output. Returns what it printed on stdout.

    In-process because each `python -m tunelab` start costs about 3.5 s here (the parser
    imports every command's module); the code run is the same: parsing, the password read
    from stdin, the recipe.
    """
    from tunelab.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        sys.stdin = saved
    assert code == 0, f"tunelab {' '.join(args)} -> {code}\n{out.getvalue()}\n{err.getvalue()}"
    return out.getvalue()


@dataclass
class ReviewServer:
    proc: subprocess.Popen
    url: str
    port: int
    db_url: str
    folder: Path
    log: Path
    env: dict[str, str]

    def cli(self, *args: str, stdin: str = "") -> str:
        """A `tunelab` command on the server's database (``--db`` appended)."""
        return tunelab(*args, "--db", self.db_url, stdin=stdin)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then a bounded wait (killed if it does not stop)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"the review server ignored SIGTERM for {timeout} s") from None
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def add_user(self, name: str, role: str, password: str) -> None:
        self.cli("review", "user", "add", name, "--role", role, "--password-stdin",
                 stdin=password + "\n")

    def add_project(self, name: str, kind: str = "output", reviews: int = 2,
                    guideline: str = GUIDELINE) -> None:
        path = self.folder / f"{name}-guideline.md"
        path.write_text(guideline, encoding="utf-8")
        self.cli("review", "project", "add", name, "--kind", kind, "--guideline", str(path),
                 "--reviews", str(reviews))

    def client(self) -> WebClient:
        return WebClient(self.port)


def start_review_server(folder: Path, users: dict[str, tuple[str, str]],
                        db_url: str | None = None, timeout: float = 60) -> ReviewServer:
    """Create ``users`` (name -> (role, password)) with the CLI, then start `tunelab review
    serve --port 0` with its log (stdout and stderr) in ``folder`` (the app refuses a
    database without users)."""
    folder.mkdir(parents=True, exist_ok=True)
    db_url = db_url or f"sqlite:///{folder / 'review.db'}"
    for name, (role, password) in users.items():
        tunelab("review", "user", "add", name, "--role", role, "--password-stdin", "--db",
                db_url, stdin=password + "\n")
    env = review_env(folder)
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tunelab", "review", "serve", "--port",
                                 "0", "--host", "127.0.0.1", "--db", db_url],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _READY.search(log.read_text(errors="replace"))
        if found:
            return ReviewServer(proc, found.group(1), int(found.group(2)), db_url, folder, log, env)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise AssertionError(f"the review server did not start:\n{log.read_text(errors='replace')}")


# --- items ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SheetItem:
    """One row of a review sheet: a prompt and one answer per model (blinded A, B, ...)."""

    prompt: str
    answers: tuple[str, ...]
    models: tuple[str, ...]
    reference: str = ""


def write_sheet(folder: Path, items: list[SheetItem]) -> Path:
    """``review.csv`` and ``review_key.json`` as `tunelab eval --review` writes them
    (every item with the same number of answers)."""
    letters = [chr(ord("A") + i) for i in range(len(items[0].answers))]
    folder.mkdir(parents=True, exist_ok=True)
    header = ["item", "id", "prompt", "reference", *[f"answer_{x}" for x in letters], "rater",
              "preferred", *[f"score_{x}" for x in letters], "comment"]
    with open(folder / "review.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for n, it in enumerate(items, 1):
            w.writerow([n, f"row-{n}", f"[user] {it.prompt}", it.reference, *it.answers, "", "",
                        *[""] * len(letters), ""])
    key = {"models": sorted({m for it in items for m in it.models}), "letters": letters,
           "items": {str(n): dict(zip(letters, it.models, strict=True))
                     for n, it in enumerate(items, 1)}}
    (folder / "review_key.json").write_text(json.dumps(key), encoding="utf-8")
    return folder / "review.csv"


def add_sheet(server: ReviewServer, project: str, sheet: Path) -> None:
    """Add a sheet's rows as items with `tunelab review add PROJECT review.csv`."""
    server.cli("review", "add", project, str(sheet))


def item_ids_by_prompt(db_url: str, project: str) -> dict[str, int]:
    """The project's items: first user message -> item id."""
    from sqlalchemy import select

    from tunelab.db import open_database
    from tunelab.db.review import get_project
    from tunelab.db.tables import ReviewItemRow

    with open_database(db_url) as db:
        pid = get_project(db, project).id
        with db.session() as s:
            rows = s.execute(select(ReviewItemRow.id, ReviewItemRow.shown)
                             .where(ReviewItemRow.project_id == pid)).all()
    return {json.loads(shown)["prompt"][-1]["content"]: int(i) for i, shown in rows}


# --- a raw HTTP client that keeps cookies -------------------------------------------------

@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def csrf(self) -> str:
        found = CSRF.search(self.body)
        assert found, f"no CSRF token on the page ({self.status}): {self.body[:500]}"
        return found.group(1)


@dataclass
class WebClient:
    """One signed-in (or not) visitor: a cookie jar over plain ``http.client`` requests."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    token: str = ""  # the session's CSRF token, read from the last page that had one

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            body = None
            if form is not None:
                body = urlencode(form)
                sent["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=sent)
            raw = conn.getresponse()
            out = Response(raw.status, raw.headers, raw.read().decode("utf-8", "replace"))
        finally:
            conn.close()
        for cookie in out.headers.get_all("Set-Cookie") or []:
            name, value = cookie.split(";", 1)[0].split("=", 1)
            value = value.strip('"')
            if value and "Max-Age=0" not in cookie:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        found = CSRF.search(out.body)
        if found and "__Host-tunelab_session" in self.cookies:
            self.token = found.group(1)
        return out

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str], csrf: bool = True, **kw) -> Response:
        """POST a form, with the session's CSRF token unless ``csrf`` is False."""
        return self.request("POST", path, {**form, "csrf_token": self.token} if csrf else form, **kw)

    def sign_in(self, name: str, password: str) -> Response:
        """The sign-in form as a browser fills it; on success the home page's token is kept."""
        page = self.get("/login")
        out = self.request("POST", "/login", {"csrf_token": page.csrf(), "next": "/",
                                              "name": name, "password": password})
        if out.status == 303:
            self.get("/")
        return out


def item_of(response: Response) -> int:
    """The item id a redirect to ``/projects/P/items/ID`` names."""
    path = urlsplit(response.location).path
    found = re.fullmatch(r"/projects/[^/]+/items/(\d+)", path)
    assert response.status == 303 and found, (response.status, response.location,
                                              response.body[:300])
    return int(found.group(1))
