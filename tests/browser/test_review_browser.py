"""The review app in a real browser: Playwright driving Debian's Chromium (never a download)
against a real `tunelab review serve` (tests/review_server.py).

Two reviewers sign in (separate browser contexts) and label the same five items: alice
with the keyboard alone (Tab, digit keys, Ctrl+Enter), bob with the mouse. They agree on
three, disagree on one, and bob leaves the fifth half done. The disagreement, and only
it, reaches the adjudicator's queue; the adjudicator settles it; the items that leave the
app (``final_items``, and what `tunelab review export` writes) are exactly the
agreed and adjudicated ones, checked by id and content. Every page is photographed under
the test's folder and checked to be more than a blank page; at 200% zoom (640x480 CSS
pixels at device scale 2) the item page does not scroll sideways and its submit button
is reached with Tab.

Skips only when /usr/bin/chromium is absent (`make install-dev` installs it with apt).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from review_server import (
    SheetItem,
    add_sheet,
    item_ids_by_prompt,
    start_review_server,
    write_sheet,
)

CHROMIUM = Path("/usr/bin/chromium")
# `make test` sets TUNELAB_REQUIRE_BROWSER: there a missing chromium fails the suite
# (the acceptance needs these tests run); a bare pytest elsewhere skips them.
if os.environ.get("TUNELAB_REQUIRE_BROWSER") and not CHROMIUM.exists():
    pytest.fail("no /usr/bin/chromium: run `make install-dev` (apt-get install chromium)",
                pytrace=False)
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no /usr/bin/chromium (make install-dev installs it)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROJECT = "answers"
PASSWORDS = {"alice": "alice-browser-pass-1", "bob": "bob-browser-pass-22",
             "carol": "carol-browser-pass-333", "dana": "dana-browser-pass-4444"}
ROLES = {"alice": "reviewer", "bob": "reviewer", "carol": "adjudicator", "dana": "admin"}

BOIL = SheetItem("At what temperature does water boil at sea level?",
                 ("100 °C (212 °F).", "About 50 °C."), ("tuned", "base"))
CAT = SheetItem("Suggest a name for a grey cat.", ("Smokey.", "Ash, or Pebble."),
                ("base", "tuned"))
CAPITAL = SheetItem("What is the capital of France?", ("Paris.",), ("tuned",))
SPIDER = SheetItem("How many legs does a spider have?", ("Six.",), ("tuned",))
THANKS = SheetItem("Translate 'thank you' into German.", ("Danke.",), ("tuned",))
# what each reviewer answers: field -> value (choices by their label, text typed)
PLAN = {
    "alice": {BOIL.prompt: {"preferred": "A"}, CAT.prompt: {"preferred": "A"},
              CAPITAL.prompt: {"verdict": "good"},
              SPIDER.prompt: {"verdict": "bad", "correction": "Eight legs."},
              THANKS.prompt: {"verdict": "good"}},
    "bob": {BOIL.prompt: {"preferred": "A"}, CAT.prompt: {"preferred": "B"},
            CAPITAL.prompt: {"verdict": "good"},
            SPIDER.prompt: {"verdict": "bad", "correction": "Eight   legs. "}},
}


def assert_not_blank(path: Path) -> None:
    """A real page, not an empty one: varied pixels and many colours (text edges)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    packed = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    colours = len(np.unique(packed))  # 1-D: unique rows of a 3-column array take seconds
    assert pixels.std() > 8 and colours > 40, (path.name, float(pixels.std()), colours)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    server = start_review_server(tmp_path_factory.mktemp("review-browser"),
                                 {name: (role, PASSWORDS[name]) for name, role in ROLES.items()})
    try:
        server.add_project(PROJECT)
        add_sheet(server, PROJECT, write_sheet(server.folder / "pairs", [BOIL, CAT]))
        add_sheet(server, PROJECT, write_sheet(server.folder / "singles",
                                               [CAPITAL, SPIDER, THANKS]))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Shots:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    def __call__(self, page, name: str) -> None:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)


def sign_in(context, site, name: str, shots: Shots | None = None):
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(site.url + "/")
    assert "/login" in page.url  # not signed in: the sign-in page
    if shots:
        shots(page, "login")
    page.fill("#name", name)
    page.fill("#password", PASSWORDS[name])
    page.click("button:has-text('Sign in')")
    page.wait_for_url(site.url + "/")
    assert page.locator(".who").inner_text().startswith(name)
    return page


def prompt_of(page) -> str:
    return page.locator(".turn.user pre").first.inner_text().strip()


def focused(page) -> dict:
    return page.evaluate("""() => { const e = document.activeElement;
        return {tag: e.tagName, type: e.type || '', name: e.name || '', value: e.value || '',
                text: (e.innerText || '').trim()}; }""")


def tab_to(page, wanted, limit: int = 40) -> dict:
    """Press Tab until ``wanted(focused element)``; fails after ``limit`` presses."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        now = focused(page)
        if wanted(now):
            return now
    raise AssertionError(f"Tab never reached the element; last focus {focused(page)}")


def answer_by_keyboard(page, plan: dict) -> None:
    """Tab into the form, a digit for the choice, Tab and type the correction, Ctrl+Enter."""
    field = "preferred" if "preferred" in plan else "verdict"
    tab_to(page, lambda f: f["type"] == "radio" and f["name"] == field)
    options = page.locator(f'input[name="{field}"]').evaluate_all("els => els.map(e => e.value)")
    page.keyboard.press(str(options.index(plan[field]) + 1))
    assert page.locator(f'input[name="{field}"]:checked').get_attribute("value") == plan[field]
    if plan.get("correction"):
        page.keyboard.press("Tab")
        assert focused(page)["name"] == "correction"
        page.keyboard.type(plan["correction"])
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")


def answer_by_mouse(page, plan: dict) -> None:
    field = "preferred" if "preferred" in plan else "verdict"
    page.click(f'input[name="{field}"][value="{plan[field]}"]')
    if plan.get("correction"):
        page.fill("#f-correction", plan["correction"])
    with page.expect_navigation():
        page.click("button:has-text('Submit answer')")


def review(page, name: str, count: int, by_keyboard: bool, shots: Shots | None = None) -> list[str]:
    """Start reviewing from the home page and answer ``count`` items by plan."""
    with page.expect_navigation():
        page.click("button:has-text('Start reviewing')")
    seen = []
    for n in range(count):
        assert re.search(rf"/projects/{PROJECT}/items/\d+$", page.url), page.url
        prompt = prompt_of(page)
        seen.append(prompt)
        if shots and n == 0:
            shots(page, "item")
        plan = PLAN[name][prompt]
        (answer_by_keyboard if by_keyboard else answer_by_mouse)(page, plan)
    return seen


def test_two_reviewers_an_adjudicator_and_the_export(site, chromium, tmp_path):
    from tunelab.db import open_database
    from tunelab.db.review import final_items, get_item, get_project

    shots = Shots(tmp_path)
    ids = item_ids_by_prompt(site.db_url, PROJECT)
    assert len(ids) == 5
    contexts = {n: chromium.new_context(viewport={"width": 1280, "height": 800})
                for n in ("alice", "bob", "carol", "dana")}
    try:
        alice = sign_in(contexts["alice"], site, "alice", shots)
        shots(alice, "home")
        assert "5 items waiting for you" in alice.inner_text("main")
        bob = sign_in(contexts["bob"], site, "bob")
        # alice, keyboard only, answers all five; bob, by mouse, four of them
        assert sorted(review(alice, "alice", 5, by_keyboard=True, shots=shots)) == sorted(ids)
        assert "Nothing is left for you" in alice.inner_text("main")
        bob_seen = review(bob, "bob", 4, by_keyboard=False)
        assert sorted(bob_seen) == sorted(PLAN["bob"])
        assert prompt_of(bob) == THANKS.prompt  # he holds the last one, unanswered
        # blind: bob's page for the item alice corrected never showed her correction
        assert "Eight legs." not in bob.content().replace("Eight   legs.", "")

        carol = sign_in(contexts["carol"], site, "carol")
        assert "1 disagreement to settle" in carol.inner_text("main")
        with carol.expect_navigation():
            carol.click("a:has-text('Adjudication queue')")
        shots(carol, "adjudication_queue")
        links = carol.locator(".queue-list a")
        assert links.count() == 1 and links.first.inner_text() == f"Item {ids[CAT.prompt]}"
        with carol.expect_navigation():
            links.first.click()
        shots(carol, "adjudication_item")
        table = carol.inner_text(".answers-table")
        assert re.search(r"alice\s+A", table) and re.search(r"bob\s+B", table), table
        carol.click('input[name="preferred"][value="B"]')
        with carol.expect_navigation():
            carol.click("button:has-text('Decide')")
        assert "No disagreements are waiting" in carol.inner_text("main")

        dana = sign_in(contexts["dana"], site, "dana")
        texts = {}
        for path, name, expect in [
                (f"/projects/{PROJECT}/agreement", "agreement", "4 items with two or more answers"),
                (f"/projects/{PROJECT}/progress", "progress", "Items per reviewer"),
                ("/admin/users", "users", "carol"),
                (f"/projects/{PROJECT}/guideline", "guideline", "Judging answers")]:
            dana.goto(site.url + path)
            texts[name] = dana.inner_text("main")
            assert expect in texts[name], (path, texts[name][:500])
            shots(dana, name)
        agreement = texts["agreement"]
        assert "3 agreed, 1 disagreed" in agreement and "Reviewers: alice, bob" in agreement
    finally:
        for c in contexts.values():
            c.close()

    assert sorted(p.stem for p in shots.taken) == sorted(
        ["login", "home", "item", "adjudication_queue", "adjudication_item", "agreement",
         "progress", "users", "guideline"])
    for path in shots.taken:
        assert_not_blank(path)

    # what may leave the app: the three agreed items and the adjudicated one, nothing else
    expected = {ids[BOIL.prompt]: ("agreed", {"preferred": "A"}),
                ids[CAT.prompt]: ("adjudicated", {"preferred": "B"}),
                ids[CAPITAL.prompt]: ("agreed", {"verdict": "good", "correction": ""}),
                ids[SPIDER.prompt]: ("agreed", {"verdict": "bad", "correction": "Eight legs."})}
    with open_database(site.db_url) as db:
        final = final_items(db, get_project(db, PROJECT))
        assert {f.item_id: (f.how, f.decision) for f in final} == expected
        cat = next(f for f in final if f.how == "adjudicated")
        assert cat.adjudicator == "carol" and sorted(cat.reviewers) == ["alice", "bob"]
        assert cat.hidden["key"] == {"A": "base", "B": "tuned"}  # kept hidden, for verdicts
        assert get_item(db, ids[THANKS.prompt]).status == "open"
    check_exports(site, tmp_path)


def check_exports(site, tmp_path: Path) -> None:
    """`tunelab review export` writes exactly the final items' rows and pairs."""
    rows_path, pairs_path = tmp_path / "rows.jsonl", tmp_path / "pairs.jsonl"
    site.cli("review", "export", PROJECT, "--as", "rows", "--out", str(rows_path))
    site.cli("review", "export", PROJECT, "--as", "pairs", "--out", str(pairs_path))
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    got = sorted((r["messages"][0]["content"], r["messages"][-1]["content"]) for r in rows)
    assert got == sorted([(BOIL.prompt, BOIL.answers[0]), (CAT.prompt, CAT.answers[1]),
                          (CAPITAL.prompt, "Paris."), (SPIDER.prompt, "Eight legs.")])
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    pairs = [json.loads(line) for line in pairs_path.read_text().splitlines()]
    got = sorted((p["prompt"][0]["content"], p["chosen"][0]["content"],
                  p["rejected"][0]["content"]) for p in pairs)
    assert got == sorted([(BOIL.prompt, *BOIL.answers), (CAT.prompt, CAT.answers[1],
                                                         CAT.answers[0]),
                          (SPIDER.prompt, "Eight legs.", "Six.")])
    provenance = json.loads(Path(f"{rows_path}.provenance.json").read_text())
    assert sorted(provenance["reviewers"]) == ["alice", "bob"]
    assert THANKS.prompt not in rows_path.read_text() + pairs_path.read_text()


def test_item_page_at_200_percent_zoom(site, chromium, tmp_path):
    """640x480 CSS pixels at device scale 2 (a 1280x960 screen at 200%): no sideways
    scrolling, and the submit button is reached with Tab alone."""
    context = chromium.new_context(viewport={"width": 640, "height": 480}, device_scale_factor=2)
    try:
        page = sign_in(context, site, "bob")
        wide = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert page.evaluate(wide) <= 1
        with page.expect_navigation():
            page.click("button:has-text('Start reviewing')")
        assert re.search(rf"/projects/{PROJECT}/items/\d+$", page.url)
        assert page.evaluate(wide) <= 1, page.evaluate(wide)
        page.screenshot(path=str(tmp_path / "item_zoom.png"), full_page=True)
        assert_not_blank(tmp_path / "item_zoom.png")
        button = tab_to(page, lambda f: f["tag"] == "BUTTON" and f["text"] == "Submit answer",
                        limit=60)
        assert button["type"] == "submit"
        box = page.locator("button:has-text('Submit answer')").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 640 + 1, box
    finally:
        context.close()
