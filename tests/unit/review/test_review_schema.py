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
