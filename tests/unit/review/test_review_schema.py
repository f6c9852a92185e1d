"""Label schemas: which questions apply, how answers are checked and compared."""

from __future__ import annotations

import pytest

from tunelab.errors import UsageError
from tunelab.review.passwords import check_password_strength, hash_password, verify_password
from tunelab.review.schema import (
    AnswerInvalid,
    agree,
    default_schema,
    load_schema,
    parse_answer,
    schema_from_json,
    schema_to_json,
)

PAIR = {"prompt": [{"role": "user", "content": "q"}],
        "answers": [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}]}
ONE = {"prompt": [], "answers": [{"label": "A", "text": "x"}]}


def test_output_questions_depend_on_how_many_answers_an_item_shows():
    fields = default_schema("output")
    assert [f.name for f in fields if f.applies(PAIR)] == ["preferred"]
    assert [f.name for f in fields if f.applies(ONE)] == ["verdict", "correction"]
    preferred = fields[0]
    assert preferred.options(PAIR) == ["A", "B", "tie"]
    assert parse_answer(fields, PAIR, {"preferred": "B", "correction": "ignored"}) == {
        "preferred": "B"}
    assert parse_answer(fields, ONE, {"verdict": "bad", "correction": "z",
                                      "preferred": "A"}) == {"verdict": "bad", "correction": "z"}


def test_bad_answers_name_every_field_at_fault(tmp_path):
    fields = load_schema_from({"fields": [
        {"name": "label", "kind": "choice", "choices": ["pos", "neg"]},
        {"name": "quality", "kind": "score", "low": 1, "high": 5},
        {"name": "note", "kind": "text", "required": True}]}, tmp_path)
    with pytest.raises(AnswerInvalid) as bad:
        parse_answer(fields, ONE, {"label": "meh", "quality": "7"})
    assert bad.value.problems == ["label: 'meh' is not one of pos, neg",
                                  "quality: '7' must be a whole number 1 to 5", "note: required"]
    assert parse_answer(fields, ONE, {"label": "pos", "quality": "4", "note": "ok"}) == {
        "label": "pos", "quality": 4, "note": "ok"}


def load_schema_from(doc, folder):
    import yaml

    path = folder / "schema.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_schema(path)


def test_schema_files_are_checked_with_every_problem_named(tmp_path):
    with pytest.raises(UsageError) as bad:
        load_schema_from({"fields": [{"name": "x", "kind": "choice", "choices": ["one"]},
                                     {"name": "x", "kind": "stars"},
                                     {"name": "s", "kind": "score", "low": 5, "high": 1}]},
                         tmp_path)
    text = str(bad.value)
    assert "fields[0].choices" in text and "fields[1].name" in text
    assert "fields[1].kind" in text and "fields[2]: low" in text
    fields = default_schema("feedback")
    assert schema_from_json(schema_to_json(fields)) == fields


def test_malformed_fields_are_problems_not_letters_or_tracebacks(tmp_path):
    yaml_text = """fields:
  - {name: verdict, kind: choice, choices: good}
  - {name: stars, kind: choice, choices: 5}
  - {name: ok, kind: choice, choices: [yes, no]}
  - {name: pick, kind: choice, choices: [a, [b], a]}
  - {name: sure, kind: choice, choices: [a, b], required: "no"}
  - {name: wide, kind: score, low: 0, high: 100}
  - {name: csrf_token, kind: text}
  - {name: next, kind: text}
  - {name: note, kind: text, question: [what, is, wrong]}
  - {name: guideline_version, kind: text}
"""
    path = tmp_path / "schema.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UsageError) as bad:
        load_schema(path)
    text = str(bad.value)
    assert "11 problem(s)" in text and text.count(": fields[") == 11  # all at once; ok has two
    assert "fields[0].choices: 'good' must be a list" in text
    assert "fields[1].choices: 5 must be a list" in text
    assert "fields[2].choices: True was read as true/false; quote" in text
    assert "fields[3].choices: ['b'] must be a non-empty word or number" in text
    assert "fields[4].required: 'no' must be true or false" in text
    assert "fields[5]: low (0) to high (100) spans 100; at most 20" in text
    assert "fields[6].name: 'csrf_token' is reserved" in text
    assert "fields[7].name: 'next' is reserved" in text
    assert "fields[8].question: ['what', 'is', 'wrong'] must be text" in text
    assert "fields[9].name: 'guideline_version' is reserved" in text
    path.write_text("fields:\n  - {name: pick, kind: choice, choices: [a, b, a]}\n"
                    "  - {name: ok, kind: choice, choices: ['yes', 'no', 3], required: false}\n"
                    "  - {name: grade, kind: score, low: 0, high: 20}\n")
    with pytest.raises(UsageError, match=r"fields\[0\].choices: \['a', 'b', 'a'\] holds a "
                                         r"choice twice"):
        load_schema(path)
    path.write_text("fields:\n  - {name: ok, kind: choice, choices: ['yes', 'no', 3], "
                    "required: false}\n  - {name: grade, kind: score, low: 0, high: 20}\n")
    ok, grade = load_schema(path)
    assert (ok.choices, ok.required, ok.question) == (("yes", "no", "3"), False, "ok")
    assert (grade.low, grade.high, grade.required) == (0, 20, True)


def test_answers_agree_field_by_field_with_text_whitespace_collapsed():
    assert agree([{"verdict": "bad", "correction": "Paris is  the capital"},
                  {"verdict": "bad", "correction": " Paris is the capital\n"}])
    assert not agree([{"verdict": "bad", "correction": "Paris"},
                      {"verdict": "bad", "correction": "Lyon"}])
    assert not agree([{"preferred": "A"}, {"preferred": "tie"}])
    assert agree([{"score": 3}, {"score": 3}, {"score": 3}])


def test_passwords_are_argon2id_hashes_and_short_ones_are_refused():
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "correct horse battery!")
    assert not verify_password(None, "anything at all")  # an unknown user
    assert not verify_password("not a hash", "x")
    with pytest.raises(UsageError, match="at least 12"):
        check_password_strength("short")
