"""The review app's guards, against a real `tunelab review serve` process (tests/review_server.py).

Every route but the sign-in page needs a session (the routes are read from the app
itself, so a new one cannot be forgotten); a reviewer reads neither another reviewer's
answers nor the admin pages; forms without their CSRF token, with a wrong one or from
another origin are refused; ten wrong passwords lock a name until an admin sets a new
password; passwords appear neither in the database file nor in the server's log;
cookies and security headers are as the app documents.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from starlette.routing import Route

from review_server import SheetItem, add_sheet, item_of, start_review_server, write_sheet

PASSWORDS = {"alice": "alice-Secret-pass-1", "bob": "bob-Secret-pass-22",
             "carol": "carol-Secret-pass-333", "dana": "dana-Secret-pass-4444",
             "erin": "erin-Secret-pass-55555"}
ROLES = {"alice": "reviewer", "bob": "reviewer", "carol": "adjudicator", "dana": "admin",
         "erin": "reviewer"}
WRONG = "wrong-password-%d-xyz"
NEW_ERIN = "erin-New-pass-666666"
SECRET_ANSWER = "ALICE-PRIVATE-CORRECTION-7d1f"
PROJECT = "sec"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    server = start_review_server(tmp_path_factory.mktemp("review-security"),
                                 {name: (role, PASSWORDS[name]) for name, role in ROLES.items()})
    try:
        server.add_project(PROJECT)
        add_sheet(server, PROJECT, write_sheet(server.folder / "sheet", [
            SheetItem(f"What is {n} + {n}?", (str(2 * n),), ("m1",)) for n in range(1, 7)]))
        yield server
    finally:
        server.stop()


def signed_in(site, name: str):
    client = site.client()
    assert client.sign_in(name, PASSWORDS[name]).status == 303
    return client


def _flatten(routes, prefix: str = "") -> list[tuple[str, Route]]:
    # FastAPI 0.16x keeps an included router as one entry (original_router inside)
    out = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            out += _flatten(inner.routes, prefix + route.include_context.prefix)
        else:
            assert isinstance(route, Route), f"a route of a kind this test does not know: {route!r}"
            out.append((prefix, route))
    return out


def _routes(tmp_path: Path) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, parameters filled in."""
    from tunelab.config.review import ReviewSettings
    from tunelab.db import open_database
    from tunelab.review.app import create_review_app

    with open_database(f"sqlite:///{tmp_path / 'routes.db'}") as db:
        app = create_review_app(db, ReviewSettings())
        out = []
        for prefix, route in _flatten(app.routes):
            path = (prefix + route.path).replace("{name}", PROJECT).replace("{item_id}", "1")
            assert "{" not in path, f"fill in the parameter of {route.path}"
            out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def test_every_route_but_login_needs_a_session(site, tmp_path):
    routes = _routes(tmp_path)
    assert len(routes) >= 14 and ("POST", f"/projects/{PROJECT}/items/1") in routes
    stranger = site.client()
    checked = 0
    for method, path in routes:
        if path == "/login":
            continue
        if method == "GET":
            out = stranger.get(path)
            assert out.status == 303, (path, out.status)
            assert out.location.startswith("/login?next="), (path, out.location)
        else:
            out = stranger.post(path, {"name": "x"}, csrf=False)
            assert out.status == 401, (method, path, out.status)
        assert "__Host-tunelab_session" not in stranger.cookies
        checked += 1
    assert checked == len(routes) - 2  # GET and POST /login are the only open ones
    assert stranger.get("/login").status == 200
    # a made-up session cookie is no session either
    stranger.cookies["__Host-tunelab_session"] = "forged-token"
    assert stranger.get("/").status == 303
    assert stranger.post(f"/projects/{PROJECT}/next", {}, csrf=False).status == 401


def test_a_reviewer_reads_neither_anothers_answers_nor_admin_pages(site):
    alice, bob = signed_in(site, "alice"), signed_in(site, "bob")
    item = item_of(alice.post(f"/projects/{PROJECT}/next", {}))
    answered = alice.post(f"/projects/{PROJECT}/items/{item}",
                          {"verdict": "bad", "correction": SECRET_ANSWER})
    assert answered.status == 303, answered.body[:500]
    assert SECRET_ANSWER in alice.get(f"/projects/{PROJECT}/items/{item}").body  # her own: shown

    denied = [f"/projects/{PROJECT}/items/{item}", f"/projects/{PROJECT}/items/{item}/answers",
              "/admin/users", f"/projects/{PROJECT}/agreement",
              f"/projects/{PROJECT}/agreement.json", f"/projects/{PROJECT}/progress",
              f"/projects/{PROJECT}/adjudicate", f"/projects/{PROJECT}/adjudicate/{item}"]
    for path in denied:
        out = bob.get(path)
        assert out.status == 403, (path, out.status)
        assert SECRET_ANSWER not in out.body
    out = bob.post("/admin/users", {"name": "mallory", "role": "admin",
                                    "password": "mallory-pass-123456"})
    assert out.status == 403
    assert bob.post(f"/projects/{PROJECT}/items/{item}", {"verdict": "good"}).status == 403

    # double review: bob is given the same item, blind: alice's answer is not on his page
    assert item_of(bob.post(f"/projects/{PROJECT}/next", {})) == item
    page = bob.get(f"/projects/{PROJECT}/items/{item}")
    assert page.status == 200 and SECRET_ANSWER not in page.body
    assert bob.post(f"/projects/{PROJECT}/items/{item}", {"verdict": "good"}).status == 303
    page = bob.get(f"/projects/{PROJECT}/items/{item}")
    assert "Your answer" in page.body and SECRET_ANSWER not in page.body
    # the adjudicator (and an admin) may read both answers of the settled item
    carol = signed_in(site, "carol")
    both = carol.get(f"/projects/{PROJECT}/items/{item}/answers")
    assert both.status == 200 and SECRET_ANSWER in both.body
    assert signed_in(site, "dana").get("/admin/users").status == 200


def test_forms_without_their_csrf_token_or_from_elsewhere_are_refused(site):
    bob = signed_in(site, "bob")
    nxt = f"/projects/{PROJECT}/next"
    assert bob.post(nxt, {}, csrf=False).status == 403
    assert bob.request("POST", nxt, {"csrf_token": "x" + bob.token[1:]}).status == 403
    assert bob.request("POST", nxt, {"csrf_token": ""}).status == 403
    assert bob.post(nxt, {}, headers={"Origin": "https://evil.example"}).status == 403
    assert bob.post("/logout", {}, csrf=False).status == 403
    assert "__Host-tunelab_session" in bob.cookies  # still signed in: logout was refused
    # another user's token is no good either
    other = signed_in(site, "alice").token
    assert bob.request("POST", nxt, {"csrf_token": other}).status == 403
    # the same form with its token, from this origin, goes through (the refusals above were real)
    ok = bob.post(nxt, {}, headers={"Origin": f"http://127.0.0.1:{site.port}"})
    assert ok.status in (200, 303), ok.body[:300]
    # the sign-in form is guarded too (a token that must match its own cookie)
    stranger = site.client()
    stranger.get("/login")
    assert stranger.request("POST", "/login", {"name": "bob", "password": PASSWORDS["bob"],
                                               "csrf_token": "made-up"}).status == 403
    assert "__Host-tunelab_session" not in stranger.cookies


def test_ten_wrong_passwords_lock_the_name_until_a_new_password(site):
    client = site.client()
    times = []
    for i in range(10):
        start = time.monotonic()
        assert client.sign_in("erin", WRONG % i).status == 401
        times.append(time.monotonic() - start)
    assert min(times[3:]) >= 0.9, times  # from the fourth attempt on, each waits 1 s
    locked = client.sign_in("erin", PASSWORDS["erin"])
    assert locked.status == 429 and "locked" in locked.body
    assert "__Host-tunelab_session" not in client.cookies
    assert site.client().sign_in("erin", PASSWORDS["erin"]).status == 429  # any browser
    site.cli("review", "user", "password", "erin", "--password-stdin", stdin=NEW_ERIN + "\n")
    assert site.client().sign_in("erin", PASSWORDS["erin"]).status == 401  # the old one is gone
    assert site.client().sign_in("erin", NEW_ERIN).status == 303


def test_passwords_are_stored_hashed_and_never_logged(site):
    from tunelab.db import open_database
    from tunelab.db.review_users import user_with_hash

    # make sure sign-ins, good and bad, happened on this server before looking
    signed_in(site, "dana")
    assert site.client().sign_in("dana", WRONG % 99).status == 401
    with open_database(site.db_url) as db:
        for name in ROLES:
            found = user_with_hash(db, name)
            assert found is not None and found[1].startswith("$argon2id$"), name
    secrets = [*PASSWORDS.values(), NEW_ERIN, *(WRONG % i for i in (*range(10), 99))]
    files = [p for p in site.folder.glob("review.db*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, (path.name, secret)
    log = site.output()
    assert "signed in: 'dana'" in log and "sign-in failed for 'dana'" in log  # it does log
    for secret in secrets:
        assert secret not in log


def test_cookies_and_security_headers(site):
    client = site.client()
    page = client.get("/login")
    login_cookie = page.headers.get("Set-Cookie", "")
    out = client.request("POST", "/login", {"csrf_token": page.csrf(), "next": "/",
                                            "name": "alice", "password": PASSWORDS["alice"]})
    assert out.status == 303
    session = [c for c in out.headers.get_all("Set-Cookie")
               if c.startswith("__Host-tunelab_session=")]
    assert len(session) == 1
    for cookie in (session[0], login_cookie):
        flags = {f.strip().split("=")[0].lower(): f.strip() for f in cookie.split(";")[1:]}
        assert cookie.startswith("__Host-")
        assert "secure" in flags and "httponly" in flags, cookie
        assert flags["samesite"].lower() == "samesite=strict", cookie
        assert flags["path"] == "Path=/" and "domain" not in flags, cookie  # __Host- rules
    home = client.get("/")
    csp = home.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce and f'<script nonce="{nonce.group(1)}">' in home.body
    for part in ("default-src 'none'", "frame-ancestors 'none'", "form-action 'self'"):
        assert part in csp
    assert home.headers["X-Frame-Options"] == "DENY"
    assert home.headers["X-Content-Type-Options"] == "nosniff"
    assert home.headers["Cache-Control"] == "no-store"
    assert "Content-Security-Policy" in client.get("/login").headers


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/x",
                                    "/\\evil.example/x", "/\t/evil.example/x"])
def test_sign_in_never_redirects_off_site(site, target):
    # browsers read "/\evil" and "/<tab>/evil" as "//evil" (WHATWG URL parsing): another site
    client = site.client()
    page = client.get("/login")
    out = client.request("POST", "/login", {"csrf_token": page.csrf(), "next": target,
                                            "name": "alice", "password": PASSWORDS["alice"]})
    assert out.status == 303
    location = out.location
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    assert not any(c == "\\" or ord(c) < 33 for c in location), location
