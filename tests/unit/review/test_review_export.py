"""Review exports end to end on a real SQLite database: items added with the recipe,
reviewed by two reviewers and an adjudicator through tunelab.db.review, exported as rows,
pairs, verdicts and feedback decisions. Exports hold exactly the agreed and adjudicated
items, files are read back with tunelab's own readers, provenance names who decided."""

from __future__ import annotations

import json

import pytest

from review_data_helpers import (
    Reviewers,
    chat,
    give_feedback,
    item_ids,
    log_requests,
    make_sheet,
    open_db,
)
from tunelab.data.load import load_examples, load_pairs
from tunelab.db.feedback import FeedbackInput, write_feedback
from tunelab.db.review import (
    claim_next,
    create_project,
    final_items,
    get_project,
    list_exports,
    set_guideline,
    submit_answer,
)
from tunelab.errors import UsageError
from tunelab.recipes.feedback import export_feedback
from tunelab.recipes.review_add import add_to_project
from tunelab.recipes.review_export import export_project
from tunelab.review.export import export_rows

PREF = "preferred"


@pytest.fixture
def db(tmp_path):
    with open_db(tmp_path) as db:
        yield db


def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'review.db'}"


def read_json(path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def compared(tmp_path, db):
    """An output project of 5 sheet items: agreed A, agreed tie, adjudicated B (after a
    guideline change), disagreed (not settled), open."""
    create_project(db, "sheet", "output", {}, "Prefer the right sum.", 2)
    paths = make_sheet(tmp_path / "sheet", n=5)
    added = add_to_project("sheet", paths["csv"], db_url=url(tmp_path))
    assert (added.added, added.already_there, added.sources) == (5, 0, ["eval_sheet"])
    again = add_to_project("sheet", paths["csv"], db_url=url(tmp_path))
    assert (again.added, again.already_there) == (0, 5)  # the same references: skipped
    ids = sorted(item_ids(db, get_project(db, "sheet")).values())
    people = Reviewers(db)
    people.answer("sheet", {ids[0]: ({PREF: "A"}, {PREF: "A"})})
    set_guideline(db, "sheet", "Prefer the right sum; a tie when both are right.")
    people.answer("sheet", {ids[1]: ({PREF: "tie"}, {PREF: "tie"}),
                            ids[2]: ({PREF: "A"}, {PREF: "B"}),
                            ids[3]: ({PREF: "A"}, {PREF: "B"})})
    people.settle("sheet", ids[2], {PREF: "B"})
    key = read_json(paths["key"])["items"]
    return ids, key


def test_rows_hold_exactly_the_agreed_and_adjudicated_choices(tmp_path, db, compared):
    ids, key = compared
    out = tmp_path / "rows.jsonl"
    result = export_project("sheet", "rows", out, url(tmp_path))
    assert (result.records, result.items) == (2, 2)
    assert result.skipped == {"tie": 1}
    assert result.in_review == {"open": 1, "disagreed": 1}
    examples = load_examples(out)
    assert [e.messages[0].role for e in examples] == ["system", "system"]
    chosen = [e.messages[-1].content for e in examples]
    sheet = {i: item for i, item in enumerate(ids)}
    assert chosen[0].startswith(key["1"]["A"]) and chosen[1].startswith(key["3"]["B"])
    prov = read_json(tmp_path / "rows.jsonl.provenance.json")
    assert prov["reviewers"] == ["alice", "bob"] and prov["adjudicators"] == ["carol"]
    assert prov["guideline_versions"] == [1, 2] and prov["current_guideline_version"] == 2
    assert (prov["agreed"], prov["adjudicated"]) == (1, 1)
    assert set(prov["item_refs"]) == {str(sheet[0]), str(sheet[2])}
    assert prov["skipped"]["tie"]["count"] == 1 and prov["in_review"]["disagreed"] == 1
    assert prov["tunelab_version"] and prov["project"] == "sheet"
    assert list_exports(db, get_project(db, "sheet"))[0]["items"] == 2


def test_pairs_and_verdicts_from_the_comparisons(tmp_path, compared):
    ids, key = compared
    pairs_out = tmp_path / "pairs.jsonl"
    assert export_project("sheet", "pairs", pairs_out, url(tmp_path)).records == 2
    pairs = load_pairs(pairs_out)
    assert pairs[0].messages[-1].content.startswith(key["1"]["A"])
    assert pairs[0].rejected.startswith(key["1"]["B"])
    verdicts_out = tmp_path / "verdicts.json"
    result = export_project("sheet", "verdicts", verdicts_out, url(tmp_path))
    doc = read_json(verdicts_out)
    assert result.items == 3 and len(doc["verdicts"]) == 3  # the tie counts here
    winners = [key["1"]["A"], key["3"]["B"]]
    for model, r in doc["per_model"].items():
        wins = winners.count(model)
        assert (r["wins"], r["ties"], r["losses"]) == (wins, 1, 2 - wins)
        assert r["win_rate"] == pytest.approx((wins + 0.5) / 3)
        assert 0 <= r["low"] < r["win_rate"] < r["high"] <= 1
    assert "Wilson" in doc["interval"]


def test_nothing_final_is_refused_and_nothing_written(tmp_path, db):
    create_project(db, "empty", "output", {}, "g", 2)
    add_to_project("empty", make_sheet(tmp_path / "s")["csv"], db_url=url(tmp_path))
    with pytest.raises(UsageError, match="nothing to export.*3 open"):
        export_project("empty", "rows", tmp_path / "rows.jsonl", url(tmp_path))
    assert not (tmp_path / "rows.jsonl").exists()
    with pytest.raises(UsageError, match="written as .jsonl"):
        export_project("empty", "rows", tmp_path / "rows.csv", url(tmp_path))
    with pytest.raises(UsageError, match="needs a feedback project"):
        export_project("empty", "feedback", tmp_path / "fb.json", url(tmp_path))


def test_single_answers_give_rows_by_verdict_and_pairs_by_correction(tmp_path, db):
    log_requests(db, *[{"prompt": chat(f"question {i}"), "answer": f"answer {i}"}
                       for i in range(3)])
    create_project(db, "traffic", "output", {}, "g", 2)
    got = add_to_project("traffic", db_url=url(tmp_path), from_log=True, sample=3, seed=0)
    assert got.added == 3
    ids = sorted(item_ids(db, get_project(db, "traffic")).values())
    good, fixed, bad = {"verdict": "good"}, {"verdict": "bad", "correction": "better 1"}, \
        {"verdict": "bad", "correction": ""}
    Reviewers(db).answer("traffic", {ids[0]: (good, good), ids[1]: (fixed, fixed),
                                     ids[2]: (bad, bad)})
    rows = export_project("traffic", "rows", tmp_path / "r.jsonl", url(tmp_path))
    assert rows.skipped == {"bad_without_correction": 1}
    assert [e.messages[-1].content for e in load_examples(tmp_path / "r.jsonl")] == \
        ["answer 0", "better 1"]
    pairs = export_project("traffic", "pairs", tmp_path / "p.jsonl", url(tmp_path))
    assert pairs.skipped == {"no_rejected_answer": 1, "bad_without_correction": 1}
    (pair,) = load_pairs(tmp_path / "p.jsonl")
    assert (pair.messages[-1].content, pair.rejected) == ("better 1", "answer 1")


def test_data_rows_keep_their_format_and_take_the_fix(tmp_path, db):
    f = tmp_path / "tickets.csv"
    f.write_text("text,label\nmy bill is wrong,billing\napp crashes,billing\nhello,greeting\n")
    create_project(db, "labels", "data", {}, "Is the team right?", 2)
    assert add_to_project("labels", f, db_url=url(tmp_path)).added == 3
    ids = sorted(item_ids(db, get_project(db, "labels")).values())
    ok, fix, nofix = {"label_ok": "yes"}, {"label_ok": "no", "fixed": "technical"}, \
        {"label_ok": "no", "fixed": ""}
    Reviewers(db).answer("labels", {ids[0]: (ok, ok), ids[1]: (fix, fix), ids[2]: (nofix, nofix)})
    result = export_project("labels", "rows", tmp_path / "rows.jsonl", url(tmp_path))
    assert result.skipped == {"label_wrong_no_fix": 1}
    lines = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert lines == [{"text": "my bill is wrong", "label": "billing"},
                     {"text": "app crashes", "label": "technical"}]
    assert [e.meta["label"] for e in load_examples(tmp_path / "rows.jsonl")] == \
        ["billing", "technical"]
    export_project("labels", "pairs", tmp_path / "pairs.jsonl", url(tmp_path))
    (pair,) = load_pairs(tmp_path / "pairs.jsonl")
    assert (pair.messages[-1].content, pair.rejected) == ("technical", "billing")


def test_rows_of_several_formats_are_written_as_chat(tmp_path, db):
    table = tmp_path / "t.csv"
    table.write_text("text,label\nmy bill,billing\n")
    chats = tmp_path / "c.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "hello"}]}) + "\n")
    create_project(db, "mixed", "data", {}, "g", 1)
    add_to_project("mixed", table, db_url=url(tmp_path))
    add_to_project("mixed", chats, db_url=url(tmp_path))
    ids = sorted(item_ids(db, get_project(db, "mixed")).values())
    people = Reviewers(db)
    project = get_project(db, "mixed")
    for _ in ids:
        i = claim_next(db, project, people.alice)
        submit_answer(db, i, people.alice, {"label_ok": "yes"}, 1, lambda a: True)
    got = export_rows(final_items(db, project))
    assert got.records == [
        {"messages": [{"role": "user", "content": "my bill"},
                      {"role": "assistant", "content": "billing"}]},
        {"messages": [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]}]
    assert "2 formats" in got.notes[0]


def test_a_source_that_does_not_fit_the_project_is_refused(tmp_path, db):
    create_project(db, "labels", "data", {}, "g", 2)
    with pytest.raises(UsageError, match="data project.*output project"):
        add_to_project("labels", db_url=url(tmp_path), from_log=True, sample=2)
    create_project(db, "exp", "output", {}, "g", 2)
    with pytest.raises(UsageError, match="same prompt answered by two variants"):
        add_to_project("exp", db_url=url(tmp_path), experiment="nothing-logged")
    with pytest.raises(UsageError, match="--sample"):
        add_to_project("exp", db_url=url(tmp_path), from_log=True)


def feedback_items(db, project: str) -> dict[int, int]:
    """feedback id -> item id (the reference is ``feedback:<id>:<digest>``)."""
    return {int(ref.split(":")[1]): i for ref, i in item_ids(db, get_project(db, project)).items()}


def test_an_approval_pins_the_correction_the_reviewers_saw(tmp_path, db):
    (a,) = log_requests(db, {"prompt": chat("route my invoice ticket"), "answer": "technical"})
    fid = give_feedback(db, a, user="u", rating="down", correction="billing")
    create_project(db, "fb", "feedback", {}, "Is the correction right?", 2)
    assert add_to_project("fb", db_url=url(tmp_path), feedback=True).added == 1
    approve = {"decision": "approve", "correction": ""}
    Reviewers(db).answer("fb", {feedback_items(db, "fb")[fid]: (approve, approve)})
    # the user rewrites the correction after the reviewers approved "billing"
    write_feedback(db, FeedbackInput(a, "u", correction="delete every account"))
    export_project("fb", "feedback", tmp_path / "decisions.json", url(tmp_path))
    assert read_json(tmp_path / "decisions.json")["decisions"] == [
        {"feedback_id": fid, "status": "approved", "correction": "billing"}]
    export_feedback(tmp_path / "reviewed", url(tmp_path))
    sft = [json.loads(x) for x in (tmp_path / "reviewed" / "sft.jsonl").read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in sft] == ["billing"]


def test_feedback_review_decides_what_feedback_export_takes(tmp_path, db):
    a, b, c, d = log_requests(db, *[{"prompt": chat(f"route ticket {i} about my invoice"),
                                     "answer": "technical"} for i in range(4)])
    fa = give_feedback(db, a, user="u", rating="down", correction="billing")
    give_feedback(db, b, user="u", rating="down", correction="shipping")
    fc = give_feedback(db, c, user="u", rating="down", correction="billing")
    give_feedback(db, d, user="u", rating="down", correction="account")
    create_project(db, "fb", "feedback", {}, "Is the correction right?", 2)
    assert add_to_project("fb", db_url=url(tmp_path), feedback=True).added == 4
    refs = feedback_items(db, "fb")
    with pytest.raises(UsageError, match="none of the 4 feedback row"):
        export_feedback(tmp_path / "before", url(tmp_path))  # nothing approved yet
    approve_fix = {"decision": "approve", "correction": "billing team"}
    approve, reject = {"decision": "approve", "correction": ""}, {"decision": "reject"}
    people = Reviewers(db)
    people.answer("fb", {refs[fa]: (approve_fix, approve_fix),
                         refs[fa + 1]: (reject, reject),
                         refs[fc]: (approve, reject)})
    people.settle("fb", refs[fc], approve)
    result = export_project("fb", "feedback", tmp_path / "decisions.json", url(tmp_path))
    assert result.feedback_marked == 3 and result.in_review == {"open": 1, "disagreed": 0}
    doc = read_json(tmp_path / "decisions.json")
    assert doc["decisions"] == [
        {"feedback_id": fa, "status": "approved", "correction": "billing team"},
        {"feedback_id": fa + 1, "status": "rejected", "correction": None},
        {"feedback_id": fc, "status": "approved", "correction": "billing"}]
    reviewed = export_feedback(tmp_path / "reviewed", url(tmp_path))
    sft = [json.loads(x) for x in (tmp_path / "reviewed" / "sft.jsonl").read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in sft] == ["billing team", "billing"]
    assert reviewed.skipped == {"not_reviewed": 1, "rejected_in_review": 1}
    assert reviewed.as_dict()["reviewed"] is True
    everything = export_feedback(tmp_path / "all", url(tmp_path), include_unreviewed=True)
    assert everything.sft_rows == 3 and everything.skipped == {"rejected_in_review": 1}
    assert everything.as_dict()["reviewed"] is False
