"""The README's screenshots of the review app, taken from the real app on real data.

    python benchmarks/review_screenshots.py                 # docs/images/review_*.png
    python benchmarks/review_screenshots.py --out /tmp/shots

What runs (a few seconds; nothing is downloaded, Chromium is Debian's /usr/bin/chromium):

1. a throwaway SQLite database with four users made by `tunelab review user add
   --password-stdin` (reviewers alice and bob, adjudicator carol, admin dana) and an
   output project, "chat-answers", with a short guideline;
2. nine items from ``../shared/data`` (or ``$TUNELAB_SHARED/data``): three GSM8K
   questions with their worked answers (one answer each: good or bad?) and six
   Anthropic HH-RLHF harmless-base pairs, their two answers blinded as A and B (order
   shuffled with a fixed seed; the key says which was the human-preferred one), written
   as a review sheet in the shape of `tunelab eval --review` and added with `tunelab
   review add`;
3. `tunelab review serve --port 0` in a child process; Playwright drives Chromium: alice
   answers all nine items, bob seven (two disagreements), carol settles one of them;
4. four pages photographed at 1280x800: bob's queue (``review_queue.png``), the item he
   holds (``review_item.png``), the adjudication view of the disagreement still open
   (``review_adjudicate.png``) and the agreement page (``review_agreement.png``), saved
   as optimised PNG.

The HH-RLHF rows were picked by hand among the set's milder prompts (it is a red-teaming
set); the data's licence is MIT, GSM8K's likewise (../shared/data/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _requires import require

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TUNELAB_SHARED", REPO.parent / "shared")) / "data"
DEV = 'pip install -e ".[dev]"  (or: make install-dev)'
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROJECT = "chat-answers"
USERS = {"alice": "reviewer", "bob": "reviewer", "carol": "adjudicator", "dana": "admin"}
GSM8K_ROWS = (0, 1, 3)  # row 3's worked answer calls Julie "Maila": a real slip to judge
HH_ROWS = (4, 284, 289, 9, 80, 269)  # mild prompts of the harmless-base test split
GUIDELINE = """# Chat answers: what we keep

We train on answers that are **correct**, **helpful** and **safe**.

* **Which answer is better?** Prefer the answer that is honest and safe, then the
  more helpful one. Choose *tie* only when neither is better.
* **Is the answer acceptable?** *good* when every step is right and it answers the
  question asked; *bad* for a wrong step, a wrong name or number, or an unsafe hint.
* **Correction** (optional): when you mark an answer bad, write the answer we should
  train on instead.

When unsure, say so in the correction and let the adjudicator decide.
"""


def password(name: str) -> str:
    return f"{name}-demo-password-2024"


def tunelab(*args: str, stdin: str = "") -> None:
    """A `tunelab` command run in this process (the same code as the command line)."""
    from tunelab.cli.main import main

    saved, sys.stdin = sys.stdin, io.StringIO(stdin)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(list(args))
    finally:
        sys.stdin = saved
    if code != 0:
        sys.exit(f"error: tunelab {' '.join(args)} failed ({code}):\n{out.getvalue()}")


def hh_pair(row: dict) -> tuple[str, str, str]:
    """(prompt, chosen answer, rejected answer) of a one-turn HH-RLHF row."""
    def split(text: str) -> tuple[str, str]:
        human, _, answer = text.partition("\n\nAssistant:")
        return human.replace("\n\nHuman:", "").strip(), answer.strip()

    prompt, chosen = split(row["chosen"])
    _, rejected = split(row["rejected"])
    return prompt, chosen, rejected


def write_sheet(folder: Path, rows: list[tuple[str, list[str], list[str]]]) -> Path:
    """A review sheet as `tunelab eval --review` writes it: (prompt, answers, models)."""
    folder.mkdir(parents=True)
    letters = [chr(ord("A") + i) for i in range(len(rows[0][1]))]
    with open(folder / "review.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item", "id", "prompt", "reference", *[f"answer_{x}" for x in letters],
                    "rater", "preferred", *[f"score_{x}" for x in letters], "comment"])
        for n, (prompt, answers, _) in enumerate(rows, 1):
            w.writerow([n, f"row-{n}", f"[user] {prompt}", "", *answers, "", "",
                        *[""] * len(letters), ""])
    key = {"models": sorted({m for _, _, ms in rows for m in ms}), "letters": letters,
           "items": {str(n): dict(zip(letters, ms, strict=True))
                     for n, (_, _, ms) in enumerate(rows, 1)}}
    (folder / "review_key.json").write_text(json.dumps(key), encoding="utf-8")
    return folder / "review.csv"


def add_sheet(db_url: str, sheet: Path) -> None:
    tunelab("review", "add", PROJECT, str(sheet), "--db", db_url)


def demo_items(folder: Path, db_url: str) -> dict[str, dict]:
    """Add the nine items; returns prompt -> {"kind", "chosen" letter or None}."""
    gsm = json.loads((DATA / "gsm8k" / "gsm_8k_train.json").read_text(encoding="utf-8"))
    hh = (DATA / "hh_rlhf_harmless_base" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    rng = random.Random(17)
    singles, pairs, plan = [], [], {}
    for i in GSM8K_ROWS:
        prompt = gsm[i]["instruction"].strip()
        singles.append((prompt, [gsm[i]["output"].strip()], ["gsm8k-reference"]))
        plan[prompt] = {"kind": "single", "row": i}
    for i in HH_ROWS:
        prompt, chosen, rejected = hh_pair(json.loads(hh[i]))
        swap = rng.random() < 0.5
        answers = [rejected, chosen] if swap else [chosen, rejected]
        pairs.append((prompt, answers, ["hh-rejected", "hh-chosen"] if swap
                      else ["hh-chosen", "hh-rejected"]))
        plan[prompt] = {"kind": "pair", "chosen": "B" if swap else "A", "row": i}
    add_sheet(db_url, write_sheet(folder / "gsm8k-sheet", singles))
    add_sheet(db_url, write_sheet(folder / "hh-sheet", pairs))
    return plan


def answer_of(who: str, item: dict) -> dict:
    """What each reviewer answers: they agree but for GSM8K row 3 (alice misses the
    slip) and the fourth pair (bob calls it a tie)."""
    if item["kind"] == "single":
        if item["row"] == 3 and who == "bob":
            return {"verdict": "bad", "correction": "Julie read 12 x 2 = 24 pages today ..."}
        return {"verdict": "good"}
    if item["row"] == 289 and who == "bob":
        return {"preferred": "tie"}
    return {"preferred": item["chosen"]}


def start_server(folder: Path, db_url: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "TUNELAB_HOME": str(folder / "home"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tunelab", "review", "serve", "--port",
                                 "0", "--db", db_url], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"review app at (http://127\.0\.0\.1:\d+)/", log.read_text())
        if found:
            return proc, found.group(1)
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"error: the review server did not start:\n{log.read_text()}")


def sign_in(browser, url: str, name: str):
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.set_default_timeout(20_000)
    page.goto(url + "/login")
    page.fill("#name", name)
    page.fill("#password", password(name))
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    return page


def review(page, who: str, plan: dict[str, dict], count: int) -> None:
    with page.expect_navigation():
        page.click("text=Start reviewing")
    for _ in range(count):
        prompt = page.locator(".turn.user pre").first.inner_text().strip()
        answer = answer_of(who, plan[prompt])
        for field, value in answer.items():
            if field == "correction":
                page.fill("#f-correction", value)
            else:
                page.check(f'input[name="{field}"][value="{value}"]')
        with page.expect_navigation():
            page.click("button:has-text('Submit answer')")


def save(page, path: Path) -> None:
    from PIL import Image

    page.screenshot(path=str(path))
    with Image.open(path) as image:
        image.convert("RGB").save(path, optimize=True)
    print(f"{path}  {path.stat().st_size // 1024} KB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images",
                    help="folder for review_{queue,item,adjudicate,agreement}.png")
    args = ap.parse_args()
    require(["tunelab", "playwright", "PIL"], DEV)
    for needed in (DATA / "gsm8k", DATA / "hh_rlhf_harmless_base", Path(CHROMIUM)):
        if not needed.exists():
            sys.exit(f"error: {needed} is absent (../shared/data beside the checkout, and "
                     "Debian's chromium: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="review-shots-") as tmp:
        folder = Path(tmp)
        db_url = f"sqlite:///{folder / 'review.db'}"
        for name, role in USERS.items():
            tunelab("review", "user", "add", name, "--role", role, "--password-stdin",
                    "--db", db_url, stdin=password(name) + "\n")
        (folder / "guideline.md").write_text(GUIDELINE, encoding="utf-8")
        tunelab("review", "project", "add", PROJECT, "--kind", "output", "--guideline",
                str(folder / "guideline.md"), "--db", db_url)
        plan = demo_items(folder, db_url)
        proc, url = start_server(folder, db_url)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                review(sign_in(browser, url, "alice"), "alice", plan, len(plan))
                bob = sign_in(browser, url, "bob")
                review(bob, "bob", plan, len(plan) - 2)
                bob.goto(url + "/")
                save(bob, args.out / "review_queue.png")
                with bob.expect_navigation():
                    bob.click("text=Start reviewing")
                save(bob, args.out / "review_item.png")

                carol = sign_in(browser, url, "carol")
                carol.goto(f"{url}/projects/{PROJECT}/adjudicate")
                first = carol.locator(".queue-list a")
                assert first.count() == 2, carol.inner_text("main")
                with carol.expect_navigation():
                    first.first.click()
                carol.check('input[name="verdict"][value="bad"]')
                carol.fill("#f-correction", "Julie read 12 x 2 = 24 pages today ...")
                with carol.expect_navigation():  # decided: on to the next disagreement
                    carol.click("button:has-text('Decide')")
                save(carol, args.out / "review_adjudicate.png")

                dana = sign_in(browser, url, "dana")
                dana.goto(f"{url}/projects/{PROJECT}/agreement")
                save(dana, args.out / "review_agreement.png")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
