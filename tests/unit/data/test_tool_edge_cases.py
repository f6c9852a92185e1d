"""Tool rows a crafted or careless file holds: input nested past the JSON parser's depth,
schemas that point outside themselves, empty call lists, two kinds of call on one turn,
weights on results, answers that mention a name without calling, and templates that
render calls but drop results. Each is a finding (or a plain answer), never a crash."""

from __future__ import annotations

import json

from tunelab.data.formats import to_example
from tunelab.data.template import resolve_tool_format
from tunelab.data.tool_text import parse_calls
from tunelab.data.tools import arguments_problems

SPEC = {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}
TOOLS = [{"type": "function", "function": SPEC}]


def _codes(row: dict, fmt: str = "chat") -> list[tuple[str | None, str]]:
    example, findings = to_example(row, fmt, "t.jsonl", 4)
    assert all(f.line == 4 for f in findings)
    return [(f.field, f.code) for f in findings]


def _call(arguments: str) -> dict:
    return {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}


def test_json_nested_past_the_parsers_depth_is_a_finding_not_a_crash():
    row = {"tools": TOOLS, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [_call("[" * 100_000)]}]}
    assert _codes(row) == [("messages[1].tool_calls[0].function.arguments", "bad_arguments_json")]
    deep: dict = {"type": "object"}
    for _ in range(400):
        deep = {"type": "object", "properties": {"x": deep}}
    row = {"tools": [{"name": "f", "parameters": deep}],
           "messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "ok"}]}
    assert _codes(row) == [("tools[0].parameters", "bad_tool_schema")]
    sharegpt = {"tools": "[" * 100_000, "conversations": [
        {"from": "human", "value": "go"}, {"from": "gpt", "value": "ok"}]}
    assert _codes(sharegpt, "sharegpt") == [("tools", "bad_tools")]
    assert parse_calls('{"a":[' * 5000) == ('{"a":[' * 5000, [])


def test_a_schema_that_points_outside_itself_is_refused_and_a_dangling_ref_explained():
    remote = {"name": "f", "parameters": {"$ref": "https://example.com/s.json"}}
    row = {"tools": [remote], "messages": [{"role": "user", "content": "go"},
                                           {"role": "assistant", "content": "ok"}]}
    example, findings = to_example(row, "chat", "t.jsonl", 1)
    assert [f.code for f in findings] == ["bad_tool_schema"]
    assert "fetches nothing" in findings[0].message
    dangling = {"name": "f", "parameters": {"$ref": "#/$defs/none"}}
    (problem,) = arguments_problems(dangling, {"a": 1})
    assert "does not resolve" in problem


def test_an_empty_call_list_is_no_call_and_an_empty_reply_is_still_an_error():
    empty = {"role": "assistant", "content": None, "tool_calls": []}
    row = {"messages": [{"role": "user", "content": "go"}, empty]}
    assert _codes(row) == [("messages[1].content", "not_string")]
    row["messages"][1] = {"role": "assistant", "content": "fine", "tool_calls": []}
    example, findings = to_example(row, "chat", "t.jsonl", 1)
    assert not findings and example.messages[1].content == "fine"
    assert example.messages[1].tool_calls == ()


def test_tool_calls_and_function_call_on_one_turn_conflict():
    turn = {"role": "assistant", "content": None, "tool_calls": [_call('{"a": 1}')],
            "function_call": {"name": "f", "arguments": '{"a": 2}'}}
    row = {"tools": TOOLS, "messages": [{"role": "user", "content": "go"}, turn]}
    assert ("messages[1].function_call", "conflicting_fields") in _codes(row)


def test_a_weight_on_a_tool_result_is_an_error():
    row = {"tools": TOOLS, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [_call('{"a": 1}')]},
        {"role": "tool", "tool_call_id": "c1", "content": "3", "weight": 1},
        {"role": "assistant", "content": "three"}]}
    assert _codes(row) == [("messages[2].weight", "bad_weight")]


def test_an_object_with_a_name_but_no_arguments_is_text_not_a_call():
    answer = 'Here you go: {"name": "Alice", "age": 30}'
    assert parse_calls(answer) == (answer, [])
    content, (call,) = parse_calls('{"name": "f", "arguments": {"a": 1}}')
    assert content == "" and call.arguments == {"a": 1}
    assert parse_calls('{"name": "f", "parameters": {}}')[1][0].arguments == {}


def test_a_template_that_drops_tool_results_gets_the_fallback(tiny_tokenizer):
    drops = ("{% for m in messages %}{% if m.role != 'tool' %}<|im_start|>{{ m.role }}\n"
             "{{ m.content }}{% for c in m.tool_calls or [] %}{{ c.function | tojson }}"
             "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{{ tools | tojson }}")
    keeps = drops.replace("{% if m.role != 'tool' %}", "{% if true %}")
    assert resolve_tool_format(tiny_tokenizer, keeps, None) == "template"
    assert resolve_tool_format(tiny_tokenizer, drops, None) == "fallback"
    assert json.loads(json.dumps(SPEC)) == SPEC  # the probe leaves the caller's specs alone
