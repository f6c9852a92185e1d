"""tunelab.review.sources on real files and a real SQLite database: each source, its
references, what reviewers see and do not see, and every row that gives no item counted."""

from __future__ import annotations

import json

import pytest

from review_data_helpers import chat, give_feedback, log_requests, make_sheet, open_db
from tunelab.db.feedback import FeedbackInput, write_feedback
from tunelab.errors import DataError
from tunelab.review.sources import (
    items_from_data_file,
    items_from_eval_sheet,
    items_from_experiment,
    items_from_feedback,
    items_from_log,
    items_from_negative_feedback,
    prompt_messages,
)


def test_eval_sheet_items_keep_the_blinding_and_the_messages(tmp_path):
    paths = make_sheet(tmp_path / "sheet")
    got = items_from_eval_sheet(paths["csv"])
    key = json.loads(paths["key"].read_text())
    assert len(got.items) == 3 and not got.skipped
    first = got.items[0]
    assert first.source == "eval_sheet" and first.source_ref.startswith("eval:")
    assert first.source_ref.endswith(":item=1")
    assert first.shown["prompt"] == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": first.shown["prompt"][1]["content"]}]
    assert "\n\nShow it." in first.shown["prompt"][1]["content"]
    assert [a["label"] for a in first.shown["answers"]] == ["A", "B"]
    assert first.hidden["key"] == key["items"]["1"]
    model_a = first.hidden["key"]["A"]
    assert first.shown["answers"][0]["text"].startswith(model_a)
    assert "base" not in json.dumps(first.shown["details"])
    assert first.shown["reference"] is not None


def test_eval_sheet_without_its_key_is_refused(tmp_path):
    paths = make_sheet(tmp_path / "sheet")
    paths["key"].unlink()
    with pytest.raises(DataError, match="no review key"):
        items_from_eval_sheet(paths["csv"])


def test_prompt_text_without_blocks_is_one_user_message():
    assert prompt_messages("just a question") == [{"role": "user", "content": "just a question"}]
    assert prompt_messages("[user] hi\n\n[assistant] hello\n\n[user] more") == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"}]


def test_data_file_items_name_their_line_and_count_bad_rows(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "hello"}]}) + "\n"
        + "{not json\n"
        + json.dumps({"messages": [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": ""}]}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "2+2"},
                                   {"role": "assistant", "content": "4"}]}) + "\n")
    got = items_from_data_file(f)
    refs = [i.source_ref.rsplit(":", 1)[0] for i in got.items]
    assert refs == ["data:train.jsonl:1", "data:train.jsonl:4"]
    assert got.skipped == {"row_has_errors": 2}
    item = got.items[1]
    assert item.shown["prompt"] == [{"role": "user", "content": "2+2"}]
    assert item.shown["answers"] == [{"label": "A", "text": "4"}]
    assert item.hidden["line"] == 4 and item.hidden["format"] == "chat"
    assert item.hidden["row"]["messages"][1]["content"] == "4"


def test_data_references_tell_rows_of_same_named_and_edited_files_apart(tmp_path):
    def write(path, *labels):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": f"ticket {i}", "label": x}) + "\n"
                                for i, x in enumerate(labels)))
        return [i.source_ref for i in items_from_data_file(path).items]

    first = write(tmp_path / "a" / "train.jsonl", "billing", "technical")
    other = write(tmp_path / "b" / "train.jsonl", "shipping", "technical")
    assert first[0].startswith("data:train.jsonl:1:") and other[0].startswith("data:train.jsonl:1:")
    assert first[0] != other[0]  # another row on the same line of a same-named file
    assert first[1] == other[1]  # the same row is the same item
    edited = write(tmp_path / "a" / "train.jsonl", "billing", "account")
    assert edited[0] == first[0] and edited[1] != first[1]
    assert len(first[0].rsplit(":", 1)[1]) == 12


def test_classification_rows_show_the_label_as_a_detail(tmp_path):
    f = tmp_path / "tickets.csv"
    f.write_text("text,label\nmy bill is wrong,billing\napp crashes,technical\n")
    got = items_from_data_file(f)
    assert [i.source_ref.rsplit(":", 1)[0] for i in got.items] == ["data:tickets.csv:2",
                                                                   "data:tickets.csv:3"]
    first = got.items[0]
    assert first.shown["prompt"] == [{"role": "user", "content": "my bill is wrong"}]
    assert first.shown["answers"] == []
    assert first.shown["details"] == [{"name": "label", "value": "billing"}]
    assert first.hidden["row"] == {"text": "my bill is wrong", "label": "billing"}
    assert first.hidden["format"] == "classification"


def test_log_sample_is_seeded_and_counts_rows_without_text(tmp_path):
    with open_db(tmp_path) as db:
        ids = log_requests(db, *[{"prompt": chat(f"q{i}"), "answer": f"a{i}", "model": "m1",
                                  "experiment": "exp", "variant": "v1"} for i in range(6)],
                           {"prompt": None, "answer": None},  # log_text: false
                           {"status_code": 429, "answer": None})  # failed: not a candidate
        one = items_from_log(db, 3, seed=7)
        again = items_from_log(db, 3, seed=7)
        everything = items_from_log(db, 50, seed=7)
    assert [i.source_ref for i in one.items] == [i.source_ref for i in again.items]
    assert len(one.items) == 3 and one.skipped == {"text_not_logged": 1}
    assert {i.source_ref for i in everything.items} == {f"log:{r}" for r in ids[:6]}
    item = one.items[0]
    assert item.source == "log_sample" and len(item.shown["answers"]) == 1
    assert item.hidden["model"] == "m1" and item.hidden["variant"] == "v1"
    assert item.hidden["experiment"] == "exp" and "m1" not in json.dumps(item.shown)


def test_negative_feedback_gives_one_item_per_request(tmp_path):
    with open_db(tmp_path) as db:
        bad, good, mid, hidden = log_requests(
            db, {"prompt": chat("refund?"), "answer": "no"},
            {"prompt": chat("hello"), "answer": "hi"},
            {"prompt": chat("weather"), "answer": "sunny"},
            {"prompt": None, "answer": None})
        give_feedback(db, bad, user="u1", rating="down")
        give_feedback(db, bad, user="u2", score=1)
        give_feedback(db, good, user="u1", rating="up")
        give_feedback(db, mid, user="u1", score=2)
        give_feedback(db, hidden, user="u1", rating="down")
        give_feedback(db, "chatcmpl-gone", user="u1", rating="down")
        got = items_from_negative_feedback(db)
    assert [i.source_ref for i in got.items] == [f"log:{bad}", f"log:{mid}"]
    assert got.items[0].source == "log_negative"
    assert got.items[0].hidden["feedback_ids"] == [1, 2]
    assert got.skipped == {"text_not_logged": 1, "not_in_log": 1}


def test_experiment_pairs_are_blinded_and_seeded(tmp_path):
    with open_db(tmp_path) as db:
        rows = []
        for i in range(4):
            for variant in ("control", "canary"):
                rows.append({"prompt": chat(f"same {i}"), "answer": f"{variant} {i}",
                             "experiment": "exp", "variant": variant, "model": f"m-{variant}"})
        rows.append({"prompt": chat("alone"), "answer": "x", "experiment": "exp",
                     "variant": "control"})
        log_requests(db, *rows)
        got = items_from_experiment(db, "exp", None, seed=1)
        capped = items_from_experiment(db, "exp", 2, seed=1)
        none = items_from_experiment(db, "nope", None, seed=1)
    assert len(got.items) == 4 and got.skipped == {"unpaired": 1}
    assert len(capped.items) == 2 and none.items == []
    orders = set()
    for item in got.items:
        key = item.hidden["key"]
        assert set(key.values()) == {"control", "canary"}
        for a in item.shown["answers"]:
            assert a["text"].startswith(key[a["label"]])
            assert item.hidden["models"][a["label"]] == f"m-{key[a['label']]}"
        orders.add(key["A"])
        assert item.source == "experiment_pair" and item.source_ref.startswith("experiment:exp:")
    assert orders == {"control", "canary"}  # the order is shuffled, not fixed


def test_feedback_changed_by_its_user_is_a_new_item(tmp_path):
    with open_db(tmp_path) as db:
        (a,) = log_requests(db, {"prompt": chat("route: my bill"), "answer": "technical"})
        fa = give_feedback(db, a, user="u", rating="down", correction="billing")
        before = items_from_feedback(db).items[0].source_ref
        assert items_from_feedback(db).items[0].source_ref == before  # same words, same item
        write_feedback(db, FeedbackInput(a, "u", correction="shipping"))
        after = items_from_feedback(db).items[0]
        write_feedback(db, FeedbackInput(a, "u", comment="sorry, billing after all"))
        commented = items_from_feedback(db).items[0].source_ref
    assert before.startswith(f"feedback:{fa}:") and after.source_ref.startswith(f"feedback:{fa}:")
    assert len({before, after.source_ref, commented}) == 3
    assert after.hidden["correction"] == "shipping"


def test_feedback_items_show_what_the_user_said(tmp_path):
    with open_db(tmp_path) as db:
        a, b, c, d = log_requests(db, {"prompt": chat("route: my bill"), "answer": "technical"},
                                  {"prompt": chat("hi"), "answer": "hello"},
                                  {"prompt": None, "answer": None},
                                  {"prompt": chat("x"), "answer": "y"})
        fa = give_feedback(db, a, user="u", rating="down", correction="billing", comment="wrong")
        give_feedback(db, b, user="u", rating="up")
        give_feedback(db, c, user="u", correction="fixed")
        fd = give_feedback(db, d, user="u", score=1)
        got = items_from_feedback(db)
    assert [i.source_ref.rsplit(":", 1)[0] for i in got.items] == [f"feedback:{fa}",
                                                                   f"feedback:{fd}"]
    assert got.skipped == {"no_signal": 1, "text_not_logged": 1}
    item = got.items[0]
    assert item.shown["answers"] == [{"label": "A", "text": "technical"}]
    assert {d["name"]: d["value"] for d in item.shown["details"]} == {
        "rating": "down", "correction": "billing", "comment": "wrong"}
    assert item.hidden == {"feedback_id": fa, "request_id": a, "model": "tiny-run",
                           "correction": "billing"}
