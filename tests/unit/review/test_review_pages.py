"""The review app's pages through FastAPI's test client: a queue, answers, adjudication.

The client talks https to the in-process app, so the app's Secure cookies come back.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tunelab.config.review import ReviewSettings
from tunelab.db import open_database
from tunelab.db.review import ItemInput, add_items, create_project, status_counts
from tunelab.db.review_users import add_user
from tunelab.review.app import create_review_app
from tunelab.review.passwords import hash_password
from tunelab.review.schema import default_schema, schema_to_json

PASSWORD = "correct horse battery"
GUIDE = "# Guide\n\nPrefer the **shorter** answer.\n\n<script>alert(1)</script>\n"


@pytest.fixture()
def app(tmp_path):
    with open_database(f"sqlite:///{tmp_path / 'review.db'}") as db:
        hashed = hash_password(PASSWORD)
        for name, role in (("ann", "reviewer"), ("ben", "reviewer"), ("cy", "adjudicator"),
                           ("root", "admin")):
            add_user(db, name, role, hashed)
        project = create_project(db, "pairs", "output", schema_to_json(default_schema("output")),
                                 GUIDE, 2)
        add_items(db, project, [ItemInput("eval_sheet", f"item={i}", {
            "prompt": [{"role": "user", "content": f"Question {i}?"}], "reference": "ref",
            "answers": [{"label": "A", "text": f"first {i}"}, {"label": "B", "text": f"second {i}"}]},
            {"key": {"A": "base", "B": "tuned"}}) for i in range(2)])
        yield create_review_app(db, ReviewSettings(slow_seconds=0)), db, project


def _token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def signed_in(app, name: str) -> TestClient:
    client = TestClient(app, base_url="https://testserver")
    form = client.get("/login")
    done = client.post("/login", data={"name": name, "password": PASSWORD,
                                       "csrf_token": _token(form.text), "next": "/"},
                       follow_redirects=False)
    assert done.status_code == 303, done.text
    return client


def test_a_reviewer_works_through_the_queue_blind_and_final(app):
    app, db, project = app
    ann = signed_in(app, "ann")
    home = ann.get("/")
    assert "2</strong> items waiting for you" in home.text
    started = ann.post("/projects/pairs/next", data={"csrf_token": _token(home.text)},
                       follow_redirects=False)
    item_url = started.headers["location"]
    page = ann.get(item_url)
    assert "Which answer is better?" in page.text and "first 0" in page.text
    assert "tuned" not in page.text  # which model wrote which answer stays hidden
    assert "<strong>shorter</strong>" in page.text  # the guideline, as Markdown
    assert "<script>alert(1)</script>" not in page.text  # raw HTML in it is escaped
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    missing = ann.post(item_url, data={"csrf_token": _token(page.text)})
    assert missing.status_code == 422 and "preferred: choose one" in missing.text
    done = ann.post(item_url, data={"csrf_token": _token(page.text), "preferred": "A"},
                    follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] != item_url
    again = ann.get(item_url)
    assert "Your answer (final)" in again.text and 'name="preferred"' not in again.text
    refused = ann.post(item_url, data={"csrf_token": _token(page.text), "preferred": "B"})
    assert refused.status_code == 409 and "answers are final" in refused.text
    ben = signed_in(app, "ben")
    assert ben.get(item_url).status_code == 403  # not given to ben yet
    assert ben.get(item_url + "/answers").status_code == 403
    assert status_counts(db, project)["open"] == 2


def _answer_all(client: TestClient, picks: list[str]) -> None:
    home = client.get("/")
    url = client.post("/projects/pairs/next", data={"csrf_token": _token(home.text)},
                      follow_redirects=False).headers["location"]
    for pick in picks:
        page = client.get(url)
        done = client.post(url, data={"csrf_token": _token(page.text), "preferred": pick},
                           follow_redirects=False)
        url = done.headers.get("location", "")
    assert "Nothing is left for you" in done.text


def test_disagreement_is_adjudicated_and_agreement_is_reported(app):
    app, db, project = app
    _answer_all(signed_in(app, "ann"), ["A", "B"])
    _answer_all(signed_in(app, "ben"), ["A", "A"])
    assert status_counts(db, project) == {"open": 0, "agreed": 1, "disagreed": 1,
                                          "adjudicated": 0}
    cy = signed_in(app, "cy")
    queue = cy.get("/projects/pairs/adjudicate")
    (item_id,) = re.findall(r"/projects/pairs/adjudicate/(\d+)", queue.text)
    view = cy.get(f"/projects/pairs/adjudicate/{item_id}")
    assert "ann" in view.text and "ben" in view.text  # the adjudicator sees who said what
    decided = cy.post(f"/projects/pairs/adjudicate/{item_id}",
                      data={"csrf_token": _token(view.text), "preferred": "B"},
                      follow_redirects=False)
    assert decided.status_code == 303
    assert status_counts(db, project)["adjudicated"] == 1
    figures = signed_in(app, "root").get("/projects/pairs/agreement.json").json()
    assert figures["items_agreed"] == 1 and figures["items_disagreed"] == 1
    assert figures["fields"]["preferred"]["percent"] == 0.5
    page = cy.get("/projects/pairs/agreement")
    assert "Krippendorff" in page.text and f"Item {item_id}" in page.text
    assert cy.get("/projects/pairs/progress").status_code == 200
    assert cy.get("/admin/users").status_code == 403


def test_an_admin_adds_a_user_and_sign_out_ends_the_session(app):
    app, db, project = app
    root = signed_in(app, "root")
    users = root.get("/admin/users")
    weak = root.post("/admin/users", data={"csrf_token": _token(users.text), "name": "dee",
                                           "role": "reviewer", "password": "short"})
    assert weak.status_code == 422 and "at least 12" in weak.text
    added = root.post("/admin/users", data={"csrf_token": _token(users.text), "name": "dee",
                                            "role": "reviewer", "password": PASSWORD},
                      follow_redirects=False)
    assert added.status_code == 303
    assert signed_in(app, "dee").get("/").status_code == 200
    root.post("/logout", data={"csrf_token": _token(users.text)})
    assert root.get("/", follow_redirects=False).headers["location"] == "/login?next=/"


def test_malformed_addresses_and_unknown_projects_are_pages_not_errors(app):
    app, db, project = app
    ann = signed_in(app, "ann")
    for path in ("/projects/pairs/items/abc", "/projects/pairs/items/99999999999999999999999",
                 "/projects/pairs/items/0", "/projects/nope/guideline", "/projects/a%00b/guideline",
                 "/no/such/route"):
        got = ann.get(path)
        assert got.status_code == 404, path
        assert got.headers["content-type"].startswith("text/html"), path
        assert "content-security-policy" in got.headers and "Traceback" not in got.text
    nul = TestClient(app, base_url="https://testserver")
    form = nul.get("/login")
    refused = nul.post("/login", data={"name": "ann\x00", "password": PASSWORD,
                                       "csrf_token": _token(form.text)})
    assert refused.status_code == 401  # no such user; nothing stored for a name that can't be


def test_an_answer_given_while_the_guideline_changed_is_sent_back_to_be_reread(app):
    from tunelab.db.review import item_answers, set_guideline

    app, db, project = app
    ann = signed_in(app, "ann")
    home = ann.get("/")
    url = ann.post("/projects/pairs/next", data={"csrf_token": _token(home.text)},
                   follow_redirects=False).headers["location"]
    page = ann.get(url)
    assert 'name="guideline_version" value="1"' in page.text
    set_guideline(db, "pairs", "# Guide v2\n\nPrefer the **longer** answer.")
    stale = ann.post(url, data={"csrf_token": _token(page.text), "guideline_version": "1",
                                "preferred": "A"})
    assert stale.status_code == 409 and "changed to version 2" in stale.text
    assert "<strong>longer</strong>" in stale.text and 'value="2"' in stale.text
    assert 'value="A" checked' in stale.text  # the choice is kept
    item_id = int(url.rsplit("/", 1)[1])
    assert item_answers(db, item_id) == []
    done = ann.post(url, data={"csrf_token": _token(stale.text), "guideline_version": "2",
                               "preferred": "A"}, follow_redirects=False)
    assert done.status_code == 303
    assert [a.guideline_version for a in item_answers(db, item_id)] == [2]
