"""The data gate's formats: classification tables, preference pairs, self-instruct rows."""

from __future__ import annotations

import pytest

from tunelab.data.example import Message
from tunelab.data.extra_formats import HUMAN, split_pair
from tunelab.data.formats import FORMATS, detect_format, to_example


def convert(obj, fmt):
    return to_example(obj, fmt, "d.jsonl", 3)


def codes(findings):
    return [(f.field, f.code, f.severity) for f in findings]


@pytest.mark.parametrize("obj, fmt", [
    ({"label": "0", "sentence": "a film"}, "classification"),
    ({"label": 1, "content": "a film"}, "classification"),
    ({"sentence": "a film", "label": "1", "id": 4}, "classification"),  # a named text column
    ({"label": "1", "tweet": "a film", "id": 4}, None),  # three columns, none named as text
    ({"label": 1, "id": 4}, None),  # the other column holds no text
    ({"text": "a", "label": 1}, "classification"),  # the most common label + text table
    ({"text": "a", "label": 1, "idx": 0, "source": "web"}, "classification"),
    ({"text": "a", "sentence": "b", "label": 1}, "classification"),
    ({"instruction": "i", "input": "x", "output": "o", "label": 1}, "alpaca"),
    ({"instruction": "i", "input": "x", "label": 1}, None),  # an alpaca row lacking output
    ({"prompt": "p", "text": "a", "label": 1}, "text"),  # a key of another format
    ({"text": "a", "label": 1, "chosen": "x", "rejected": "y"}, "text"),
    ({"chosen": "x", "rejected": "y"}, "preference"),
    ({"prompt": "p", "chosen": "x", "rejected": "y"}, "preference"),
    ({"instruction": "i", "instances": []}, "self_instruct"),
    ({"instruction": "i", "output": "o", "instances": []}, "alpaca"),
])
def test_detect_the_new_formats(obj, fmt):
    assert detect_format(obj) == fmt
    assert fmt is None or fmt in FORMATS


def test_the_schema_names_every_format():
    from typing import get_args

    from tunelab.config.schema import FormatName

    assert set(get_args(FormatName)) == {"auto", *FORMATS}


def test_classification_row_is_text_then_label_and_keeps_the_label():
    example, findings = convert({"label": 0, "sentence": "a fine film"}, "classification")
    assert findings == []
    assert example.messages == [Message("user", "a fine film"), Message("assistant", "0")]
    assert example.meta == {"label": 0}


def test_classification_with_several_columns_picks_the_known_text_column():
    obj = {"id": "r1", "review": "dull", "label": "neg"}
    example, findings = convert(obj, "classification")
    assert findings == [] and example.messages[0].content == "dull"
    assert example.meta == {"id": "r1", "label": "neg"}


@pytest.mark.parametrize("obj, expected", [
    ({"sentence": "x"}, [("label", "missing_field", "error")]),
    ({"label": "1", "a": "x", "b": "y"}, [("text", "missing_field", "error")]),
    ({"sentence": "x", "label": " "}, [("label", "empty_content", "error")]),
    ({"sentence": "x", "label": [1]}, [("label", "not_string", "error")]),
    ({"sentence": 5, "label": "1"}, [("sentence", "not_string", "error")]),
    ({"sentence": "", "label": "1"}, [("sentence", "empty_content", "warning")]),
])
def test_classification_defects(obj, expected):
    example, findings = convert(obj, "classification")
    assert codes(findings) == expected
    assert (example is None) == any(s == "error" for _, _, s in expected)


PROMPT = f"{HUMAN} Hi there\n\nAssistant: Hello!{HUMAN} What is 2+2?\n\nAssistant:"


def test_preference_pair_splits_at_the_shared_prompt():
    row = {"chosen": PROMPT + " It is 4.", "rejected": PROMPT + " It is 5."}
    example, findings = convert(row, "preference")
    assert findings == []
    assert example.messages == [Message("user", "Hi there"),
                                Message("assistant", "Hello!", 0.0),
                                Message("user", "What is 2+2?"),
                                Message("assistant", "It is 4.")]
    assert example.meta == {"rejected": row["rejected"]}


def test_preference_answer_holding_a_marker_is_cut_where_the_pair_diverges():
    # The chosen answer itself holds "\n\nAssistant:": cut at each transcript's own last
    # marker, the two prompts would differ.
    row = {"chosen": PROMPT + " Sure.\n\nAssistant: More.", "rejected": PROMPT + " No."}
    cut, naive = split_pair(row["chosen"], row["rejected"])
    assert naive and cut == len(PROMPT) - len("\n\nAssistant:")
    example, findings = convert(row, "preference")
    assert codes(findings) == [("chosen", "prompt_mismatch", "warning")]
    assert example.messages[-1] == Message("assistant", "Sure.\n\nAssistant: More.")
    assert "after turn 3" in findings[0].message


def test_preference_empty_final_answer_is_a_warning_naming_the_side():
    # One empty side is a choice (say nothing): kept and said; both empty compare nothing.
    example, findings = convert({"chosen": PROMPT + " ", "rejected": PROMPT + " No."},
                                "preference")
    assert example is not None and example.messages[-1].content == "" and example.rejected == "No."
    assert codes(findings) == [("chosen", "empty_content", "warning")]
    example, findings = convert({"chosen": PROMPT + " ", "rejected": PROMPT}, "preference")
    assert example is None and codes(findings) == [("chosen", "empty_content", "error")]


def test_preference_transcript_may_start_without_the_blank_line():
    row = {"chosen": "Human: x\n\nAssistant: a", "rejected": "Human: x\n\nAssistant: b"}
    example, findings = convert(row, "preference")
    assert findings == [] and example.messages == [Message("user", "x"),
                                                   Message("assistant", "a")]


def test_preference_with_an_explicit_prompt():
    example, findings = convert({"prompt": "Say hi", "chosen": "hi", "rejected": "go away"},
                                "preference")
    assert findings == []
    assert example.messages == [Message("user", "Say hi"), Message("assistant", "hi")]


@pytest.mark.parametrize("row, code", [
    ({"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: b"}, "no_shared_prompt"),
    ({"chosen": "hello\n\nAssistant: a", "rejected": "hello\n\nAssistant: b"}, "bad_transcript"),
    ({"chosen": 3, "rejected": "x"}, "not_string"),
    ({"chosen": "x"}, "missing_field"),
])
def test_preference_defects(row, code):
    example, findings = convert(row, "preference")
    assert example is None and code in [f.code for f in findings]


def test_identical_pair_is_a_warning():
    row = {"chosen": PROMPT + " Same.", "rejected": PROMPT + " Same."}
    example, findings = convert(row, "preference")
    assert example is not None and [f.code for f in findings] == ["identical_pair"]


def test_self_instruct_reads_the_first_instance_and_reports_the_others():
    row = {"instruction": "Add the numbers.", "id": "t1",
           "instances": [{"input": "2 and 2", "output": "4"}, {"input": "1 and 1", "output": "2"}]}
    example, findings = convert(row, "self_instruct")
    assert example.messages == [Message("user", "Add the numbers.\n\n2 and 2"),
                                Message("assistant", "4")]
    assert example.meta == {"id": "t1"}
    assert codes(findings) == [("instances", "extra_instances", "warning")]


def test_self_instruct_instances_as_json_text_from_a_csv_cell():
    row = {"instruction": "Greet.", "instances": '[{"input": "", "output": "Hello"}]'}
    example, findings = convert(row, "self_instruct")
    assert findings == [] and example.messages == [Message("user", "Greet."),
                                                   Message("assistant", "Hello")]


@pytest.mark.parametrize("instances, expected", [
    ([], ("instances", "instances_not_list")),
    ("not json", ("instances", "instances_not_list")),
    (["x"], ("instances[0]", "row_not_object")),
    ([{"input": "a"}], ("instances[0].output", "missing_field")),
    ([{"input": "a", "output": "  "}], ("instances[0].output", "empty_content")),
    ([{"input": 3, "output": "b"}], ("instances[0].input", "not_string")),
])
def test_self_instruct_defects(instances, expected):
    example, findings = convert({"instruction": "i", "instances": instances}, "self_instruct")
    assert example is None and expected in [(f.field, f.code) for f in findings]


@pytest.mark.parametrize("row, field", [
    ({"instruction": "i"}, "instances"),
    ({"instances": [{"input": "", "output": "o"}]}, "instruction"),
])
def test_self_instruct_missing_keys(row, field):
    example, findings = convert(row, "self_instruct")
    assert example is None and [(f.field, f.code) for f in findings] == [(field, "missing_field")]
