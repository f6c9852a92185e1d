"""The review worked example's scripted reviewers, run as shipped against a real server.

`examples/review/reviewers.py` signs in two reviewers and an adjudicator and answers
through the app's own forms; the example's `run.sh` runs it on the quickstart's sheet.
Here it runs on a small sheet in the same shape, and the outcome is checked in the
database: every item settled, the careless reviewer's disagreements adjudicated by the
guideline's rule, and the verdicts export matching the answers that name the reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from review_server import SheetItem, add_sheet, start_review_server, write_sheet
from tunelab.db import open_database
from tunelab.db.review import final_items, get_project, status_counts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "review"
USERS = {"ann": ("reviewer", "ann password 123"), "ben": ("reviewer", "ben password 456"),
         "cy": ("adjudicator", "cy password 7890")}
TEAMS = ("Atlas", "Beacon", "Comet", "Dune", "Ember", "Fjord")


def test_scripted_reviewers_settle_every_item_by_the_guideline(tmp_path):
    items = []
    for i in range(12):
        team = TEAMS[i % len(TEAMS)]
        base = team if i % 4 == 0 else "Sorry to hear that! Let me look into it."
        items.append(SheetItem(f"Ticket {i}: please help", (f"{team}.", base) if i % 2 else
                               (base, team), ("tuned", "base") if i % 2 else ("base", "tuned"),
                               reference=team))
    server = start_review_server(tmp_path / "srv", USERS)
    try:
        server.add_project("routing", guideline=(EXAMPLE / "guideline.md").read_text())
        add_sheet(server, "routing", write_sheet(tmp_path / "sheet", items))
        passwords = tmp_path / "passwords.txt"
        passwords.write_text("".join(f"{n} {p}\n" for n, (_, p) in USERS.items()))
        run = subprocess.run([sys.executable, str(EXAMPLE / "reviewers.py"), server.url + "/",
                              "--project", "routing", "--reviewers", "ann", "ben",
                              "--adjudicator", "cy", "--password-file", str(passwords),
                              "--careless", "0.5", "--seed", "1"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "ann answered 12 items" in run.stderr and "ben answered 12 items" in run.stderr
        with open_database(server.db_url) as db:
            project = get_project(db, "routing")
            counts = status_counts(db, project)
            final = final_items(db, project)
        assert counts["open"] == counts["disagreed"] == 0
        assert counts["adjudicated"] > 0  # the careless reviewer made some disagreements
        assert f"cy settled {counts['adjudicated']} disagreements" in run.stderr
        for item in final:  # the guideline's rule decides every settled item
            key = item.hidden["key"]
            tuned = next(letter for letter, model in key.items() if model == "tuned")
            both_right = item.shown["answers"][0]["text"].rstrip(".") == \
                item.shown["answers"][1]["text"].rstrip(".")
            assert item.decision == {"preferred": "tie" if both_right else tuned}
        out = tmp_path / "verdicts.json"
        server.cli("review", "export", "routing", "--as", "verdicts", "--out", str(out))
        per_model = json.loads(out.read_text())["per_model"]
        tuned_wins = sum(item.decision["preferred"] not in ("tie",) for item in final)
        assert per_model["tuned"]["wins"] == per_model["base"]["losses"] == tuned_wins
        assert per_model["tuned"]["ties"] == len(final) - tuned_wins == 3  # items 0, 4, 8
    finally:
        server.stop()
