"""detect_format and to_example: each format to an Example, each defect to a finding."""

from __future__ import annotations

import json

import pytest

from tunelab.data.example import Example, Message
from tunelab.data.findings import Finding
from tunelab.data.formats import (
    FORMATS,
    closest_format,
    detect_format,
    no_format_message,
    to_example,
)


def convert(obj, fmt):
    return to_example(obj, fmt, "d.jsonl", 7)


def error_codes(findings):
    return [(f.field, f.code) for f in findings if f.severity == "error"]


@pytest.mark.parametrize("obj, fmt", [
    ({"messages": []}, "chat"),
    ({"instruction": "a", "output": "b"}, "alpaca"),
    ({"instruction": "a", "response": "b"}, "alpaca"),
    ({"prompt": "a", "completion": "b"}, "prompt_completion"),
    ({"conversations": []}, "sharegpt"),
    ({"text": "a"}, "text"),
    ({"text": "a", "label": 1}, "classification"),  # a label + text table
    ({"instruction": "a"}, None),
    ({"label": 1, "sentence": "x"}, "classification"),  # a label + one text column
    ([1, 2], None),
])
def test_detect_format_by_keys(obj, fmt):
    assert detect_format(obj) == fmt
    assert fmt is None or fmt in FORMATS


def test_chat_keeps_weights_and_passes_extra_fields_to_meta():
    obj = {"messages": [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi", "weight": 0},
                        {"role": "assistant", "content": "Hello", "weight": 1}],
           "id": "a1", "label": 3}
    example, findings = convert(obj, "chat")
    assert findings == []
    assert example == Example(
        messages=[Message("system", "Be brief."), Message("user", "Hi", 0.0),
                  Message("assistant", "Hello", 1.0)],
        source="d.jsonl", line=7, meta={"id": "a1", "label": 3})


def test_chat_messages_as_json_text_from_a_csv_cell():
    cell = json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    example, findings = convert({"messages": cell}, "chat")
    assert findings == [] and [m.role for m in example.messages] == ["user", "assistant"]


def test_unknown_role_message_is_actionable():
    obj = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "bot", "content": "c"}]}
    example, findings = convert(obj, "chat")
    assert example is None
    assert [str(f) for f in findings] == [
        "d.jsonl:7 messages[2].role: [unknown_role] role 'bot' is not one of system, user, "
        "assistant, tool; rename it"]


def test_every_defect_of_one_row_is_reported():
    obj = {"messages": [
        {"role": "User", "content": "a"},
        {"content": "b"},
        {"role": "user"},
        {"role": "assistant", "content": 5, "weight": 0.5},
        {"role": "assistant", "content": "  ", "name": "x"},
        "hello",
    ]}
    example, findings = convert(obj, "chat")
    assert example is None
    assert error_codes(findings) == [
        ("messages[0].role", "unknown_role"),
        ("messages[1].role", "missing_role"),
        ("messages[2].content", "missing_content"),
        ("messages[3].content", "not_string"),
        ("messages[3].weight", "bad_weight"),
        ("messages[4].name", "unknown_key"),
        ("messages[4].content", "empty_content"),
        ("messages[5]", "message_not_object"),
    ]
    assert "did you mean 'user'?" in findings[0].message
    assert "got a number 5" in findings[3].message


@pytest.mark.parametrize("messages, code", [
    ([], "no_assistant"),
    ([{"role": "user", "content": "a"}], "no_assistant"),
    ("not json", "messages_not_list"),
    ({"role": "user"}, "messages_not_list"),
])
def test_chat_conversation_level_errors(messages, code):
    example, findings = convert({"messages": messages}, "chat")
    assert example is None and error_codes(findings) == [("messages", code)]


@pytest.mark.parametrize("weight", [True, "1", 2, -1, 0.5, float("nan")])
def test_bad_weights(weight):
    obj = {"messages": [{"role": "user", "content": "a"},
                        {"role": "assistant", "content": "b", "weight": weight}]}
    assert error_codes(convert(obj, "chat")[1]) == [("messages[1].weight", "bad_weight")]


def test_null_keys_are_ignored_and_empty_user_turn_is_only_a_warning():
    obj = {"messages": [{"role": "user", "content": "", "weight": None, "name": None},
                        {"role": "assistant", "content": "b"}]}
    example, findings = convert(obj, "chat")
    assert example is not None and example.messages[0].weight is None
    assert [(f.field, f.code, f.severity) for f in findings] == [
        ("messages[0].content", "empty_content", "warning")]


def test_all_weights_zero_warns_that_nothing_is_trained():
    obj = {"messages": [{"role": "user", "content": "a"},
                        {"role": "assistant", "content": "b", "weight": 0}]}
    example, findings = convert(obj, "chat")
    assert example is not None and [f.code for f in findings] == ["nothing_trained"]


def test_alpaca_joins_input_and_takes_system():
    example, findings = convert({"instruction": "Add", "input": "2 and 2", "output": "4",
                                 "system": "Be exact.", "category": "math"}, "alpaca")
    assert findings == []
    assert example.messages == [Message("system", "Be exact."), Message("user", "Add\n\n2 and 2"),
                                Message("assistant", "4")]
    assert example.meta == {"category": "math"}


@pytest.mark.parametrize("extra", [{"input": ""}, {"input": "   "}, {"input": None}, {}])
def test_alpaca_response_alias_with_empty_input_like_gpteacher(extra):
    example, findings = convert({"instruction": "Say hi", **extra, "response": "hi"}, "alpaca")
    assert findings == []
    assert example.messages == [Message("user", "Say hi"), Message("assistant", "hi")]
    assert example.meta == {}


def test_alpaca_problems():
    assert error_codes(convert({"instruction": "a", "output": ""}, "alpaca")[1]) == [
        ("output", "empty_content")]
    assert error_codes(convert({"instruction": 3, "output": "b"}, "alpaca")[1]) == [
        ("instruction", "not_string")]
    assert error_codes(convert({"instruction": "a", "output": "b", "response": "c"},
                               "alpaca")[1]) == [("response", "conflicting_fields")]
    _, findings = convert({"messages": [], "instruction": "a"}, "alpaca")
    assert error_codes(findings) == [("output", "missing_field")]
    assert "format='chat'" in findings[0].message


def test_prompt_completion_and_text():
    example, _ = convert({"prompt": "Q", "completion": "A", "id": 1}, "prompt_completion")
    assert example.messages == [Message("user", "Q"), Message("assistant", "A")]
    assert example.meta == {"id": 1}
    example, _ = convert({"text": "doc", "label": "pos"}, "text")
    assert example == Example(messages=[], text="doc", source="d.jsonl", line=7,
                              meta={"label": "pos"})
    assert error_codes(convert({"text": ["a"]}, "text")[1]) == [("text", "not_string")]
    assert error_codes(convert({"prompt": "Q"}, "prompt_completion")[1]) == [
        ("completion", "missing_field")]


def test_sharegpt_maps_speakers():
    obj = {"id": "c1", "system": "Sys", "conversations": [
        {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
        {"from": "user", "value": "c"}, {"from": "ChatGPT", "value": "d"},
        {"from": "bing", "value": "e"}, {"from": "bard", "value": "f"}]}
    example, findings = convert(obj, "sharegpt")
    assert findings == []
    assert [m.role for m in example.messages] == [
        "system", "user", "assistant", "user", "assistant", "assistant", "assistant"]
    assert example.meta == {"id": "c1"}


def test_sharegpt_unknown_speaker_is_an_error():
    obj = {"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}
    example, findings = convert(obj, "sharegpt")
    assert example is None
    assert error_codes(findings) == [("conversations[1].from", "unknown_role")]
    assert "'robot' is not one of human" in findings[0].message


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_row_that_is_not_an_object(fmt):
    example, findings = convert(["a"], fmt)
    assert example is None and [f.code for f in findings] == ["row_not_object"]
    assert isinstance(findings[0], Finding) and "a list" in findings[0].message


def test_unknown_format_name():
    assert [f.code for f in convert({"text": "a"}, "csv")[1]] == ["unknown_format"]


def test_a_bad_assistant_turn_is_one_error_without_follow_on_noise():
    obj = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]}
    _, findings = convert(obj, "chat")
    assert [(f.field, f.code) for f in findings] == [("messages[1].content", "not_string")]


def test_a_missing_field_message_uses_an_before_alpaca():
    _, findings = convert({"instruction": "a", "answer": "b"}, "alpaca")
    assert "; an alpaca row looks like {" in findings[0].message
    assert " a alpaca " not in findings[0].message


@pytest.mark.parametrize("keys, fmt, lacking, renames", [
    (["instruction", "answer"], "alpaca", (("output", "response"),), ()),
    (["Messages"], "chat", (("messages",),), (("Messages", "messages"),)),
    (["prompt", "completions"], "prompt_completion", (("completion",),),
     (("completions", "completion"),)),
    (["instruction", "output_text"], "alpaca", (("output", "response"),),
     (("output_text", "output"),)),
    (["chosen"], "preference", (("rejected",),), ()),
    (["label", "sentence", "id"], "classification", (), ()),
    (["question", "reply"], None, None, None),
])
def test_closest_format_names_what_it_lacks(keys, fmt, lacking, renames):
    closest = closest_format(keys)
    if fmt is None:
        assert closest is None
        return
    assert (closest.format, closest.lacking, closest.renames) == (fmt, lacking, renames)


def test_no_format_message_names_the_closest_format_and_the_missing_key():
    assert no_format_message(["instruction", "answer"], "column") == (
        "no format fits the columns 'instruction', 'answer'; the closest is alpaca, which "
        "lacks 'output' (or 'response'): rename the column that holds 'output', or add it "
        '(an alpaca row looks like {"instruction": "...", "input": "", "output": "..."})')
    assert "rename 'Messages' to 'messages'" in no_format_message(["Messages", "id"])
    assert "set the format to 'classification'" in no_format_message(["label", "sentence", "x"])
    message = no_format_message(["question", "reply"])
    assert "none shares a key with them" in message and "text (text)" in message


def test_a_missing_field_message_suggests_the_misspelt_key():
    _, findings = convert({"instruction": "a", "Output": "b"}, "alpaca")
    assert findings[0].message.endswith("; 'Output' looks like it: rename it to 'output'")


def test_no_format_message_names_each_key_to_add_beside_the_renames():
    message = no_format_message(["Prompt", "answer"])
    assert message.startswith("no format fits the keys 'Prompt', 'answer'; the closest is "
                              "prompt_completion, which lacks 'prompt' and 'completion': "
                              "rename 'Prompt' to 'prompt'; rename the key that holds "
                              "'completion', or add it")
