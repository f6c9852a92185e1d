"""`tunelab review add` and `tunelab review export` through the real entry point
(``tunelab.cli.main.main``) on a SQLite database in tmp_path: an eval sheet and the
request log added, items finished by two reviewers and an adjudicator
(``tunelab.db.review``), exports printed and written; bad input ends in a message."""

from __future__ import annotations

import argparse
import json

import pytest

from review_data_helpers import Reviewers, chat, item_ids, log_requests, make_sheet, open_db
from tunelab.cli import exits
from tunelab.cli import main as cli_main
from tunelab.cli.review_data import add_review_data_commands
from tunelab.data.load import load_examples
from tunelab.db.review import get_project


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """main(argv) with `review add|export` wired in (until tunelab.cli.review wires them)."""
    parser = cli_main.build_parser()
    review = _subparsers(_subparsers(parser).choices["review"])
    if "add" not in review.choices:
        add_review_data_commands(review)
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    url = f"sqlite:///{tmp_path / 'review.db'}"
    guideline = tmp_path / "guide.md"
    guideline.write_text("# Guide\nPrefer the right sum.\n")

    def call(*argv: str) -> tuple[int, str, str]:
        code = cli_main.main([*argv, "--db", url])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    call.guideline = str(guideline)  # type: ignore[attr-defined]
    return call


def test_sheet_added_reviewed_and_exported(tmp_path, run):
    code, _, err = run("review", "project", "add", "sums", "--kind", "output",
                       "--guideline", run.guideline)
    assert code == exits.OK, err
    sheet = make_sheet(tmp_path / "sheet", n=4)
    code, out, err = run("review", "add", "sums", str(sheet["csv"]))
    assert code == exits.OK, err
    assert "sums: added 4 item(s) from eval_sheet; 0 already in the project" in out
    code, out, _ = run("review", "add", "sums", str(sheet["csv"]), "--json")
    assert json.loads(out)["already_there"] == 4 and json.loads(out)["added"] == 0

    with open_db(tmp_path) as db:
        ids = sorted(item_ids(db, get_project(db, "sums")).values())
        people = Reviewers(db)
        people.answer("sums", {ids[0]: ({"preferred": "A"}, {"preferred": "A"}),
                               ids[1]: ({"preferred": "A"}, {"preferred": "B"})})
        people.settle("sums", ids[1], {"preferred": "tie"})
    key = json.loads(sheet["key"].read_text())["items"]

    code, out, err = run("review", "export", "sums", "--as", "verdicts",
                         "--out", str(tmp_path / "v.json"))
    assert code == exits.OK, err
    assert "exported 2 record(s) as verdicts from 2 reviewed item(s)" in out
    assert "still in review (not exported): 2 open, 0 waiting for adjudication" in out
    winner = key["1"]["A"]
    assert f"{winner[:31]:<32} win rate 75.0%" in out  # a win and a tie of two

    code, out, err = run("review", "export", "sums", "--as", "rows",
                         "--out", str(tmp_path / "rows.jsonl"), "--json")
    assert code == exits.OK, err
    result = json.loads(out)
    assert result["records"] == 1 and result["skipped"] == {"tie": 1}
    (row,) = load_examples(tmp_path / "rows.jsonl")
    assert row.messages[-1].content.startswith(winner)
    prov = json.loads((tmp_path / "rows.jsonl.provenance.json").read_text())
    assert prov["reviewers"] == ["alice", "bob"] and prov["guideline_versions"] == [1]
    assert prov["adjudicators"] == [] and prov["agreed"] == 1  # the tie was the adjudicated one


def test_log_sample_and_negative_feedback_counted(tmp_path, run):
    with open_db(tmp_path) as db:
        log_requests(db, *[{"prompt": chat(f"q{i}"), "answer": f"a{i}"} for i in range(5)],
                     {"prompt": None, "answer": None})
    run("review", "project", "add", "traffic", "--kind", "output", "--guideline", run.guideline)
    code, out, err = run("review", "add", "traffic", "--from-log", "--sample", "3", "--seed", "4",
                         "--negative")
    assert code == exits.OK, err
    assert "added 3 item(s) from log_sample, log_negative" in out
    assert "1 the prompt or answer was not logged" in " ".join(out.split())


def test_bad_input_ends_in_a_message(tmp_path, run):
    code, _, err = run("review", "add", "nope", "--from-log", "--sample", "2")
    assert code == exits.USAGE and "no review project named 'nope'" in err
    run("review", "project", "add", "sums", "--kind", "output", "--guideline", run.guideline)
    code, _, err = run("review", "add", "sums")
    assert code == exits.USAGE and "nothing to add" in err
    code, _, err = run("review", "add", "sums", str(tmp_path / "missing.jsonl"))
    assert code == exits.USAGE and "data items belong in a data project" in err
    run("review", "project", "add", "rows", "--kind", "data", "--guideline", run.guideline)
    code, _, err = run("review", "add", "rows", str(tmp_path / "missing.jsonl"))
    assert code == exits.DATA and "missing.jsonl: no such file" in err
    code, _, err = run("review", "export", "sums", "--as", "rows", "--out",
                       str(tmp_path / "r.jsonl"))
    assert code == exits.USAGE and "nothing to export" in err
    code, _, err = run("review", "export", "sums", "--as", "feedback", "--out",
                       str(tmp_path / "f.json"))
    assert code == exits.USAGE and "needs a feedback project" in err
    code, _, err = run("review", "export", "sums", "--as", "nonsense", "--out", "x.json")
    assert code == exits.USAGE and "invalid choice" in err
