"""Reading tool-call rows (OpenAI, older functions, ShareGPT/LLaMA-Factory) and content
parts from files, and every malformed case named with its line and field."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from shared_data import shared_file
from tunelab.data.example import Example, Message, ToolCall
from tunelab.data.formats import detect_format, to_example
from tunelab.data.load import check_file

WEATHER = {"type": "object",
           "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
           "required": ["city"]}
SPEC = {"name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER}
TOOLS = [{"type": "function", "function": SPEC}]
USER = {"role": "user", "content": "Weather in Oslo for 2 days?"}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 3}'}
ANSWER = {"role": "assistant", "content": "3 degrees in Oslo."}


def call(arguments='{"city": "Oslo", "days": 2}', name="get_weather", ident="c1", **extra):
    return {"role": "assistant", **extra, "tool_calls": [
        {"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}]}


def openai_row(*turns, tools=TOOLS):
    return {"tools": tools, "messages": list(turns)}


GOOD_OPENAI = openai_row(USER, call(content=None), RESULT, ANSWER)
SHARE_CALL = {"from": "function_call",
              "value": json.dumps({"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}})}
SHARE_OBS = {"from": "observation", "value": '{"temp": 3}'}


SPEC_TEXT = json.dumps([SPEC])


def sharegpt_row(*turns, tools=SPEC_TEXT):
    return {"conversations": list(turns), "tools": tools}


GOOD_SHAREGPT = sharegpt_row({"from": "human", "value": "Weather in Oslo for 2 days?"},
                             SHARE_CALL, SHARE_OBS, {"from": "gpt", "value": "3 degrees."})


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def found(findings):
    return [(f.line, f.field, f.code) for f in findings]


# -- well-formed rows ------------------------------------------------------------------


def test_openai_tool_row_reads_calls_ids_and_results(tmp_path):
    no_content = call()  # content absent, not null
    rows = [GOOD_OPENAI, openai_row(USER, no_content, RESULT, ANSWER)]
    examples, findings = check_file(write_jsonl(tmp_path / "t.jsonl", rows))
    assert findings == []
    for e in examples:
        assert e.tools == (SPEC,)
        assert [m.role for m in e.messages] == ["user", "assistant", "tool", "assistant"]
        assert e.messages[1] == Message("assistant", "", tool_calls=(
            ToolCall("get_weather", {"city": "Oslo", "days": 2}, "c1"),))
        assert e.messages[2] == Message("tool", '{"temp": 3}', tool_call_id="c1")
        assert "tools" not in e.meta


def test_two_parallel_calls_answered_by_id_in_any_order(tmp_path):
    both = {"role": "assistant", "content": "Checking both.", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}
    row = openai_row(USER, both, {**RESULT, "tool_call_id": "b"}, {**RESULT, "tool_call_id": "a"},
                     ANSWER)
    (e,), findings = check_file(write_jsonl(tmp_path / "t.jsonl", [row]))
    assert findings == []
    assert [c.arguments["city"] for c in e.messages[1].tool_calls] == ["Oslo", "Rome"]
    assert e.messages[1].content == "Checking both."


def test_older_functions_and_function_call_and_function_results(tmp_path):
    row = {"functions": [SPEC], "messages": [
        USER, {"role": "assistant", "content": None,
               "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"role": "function", "name": "get_weather", "content": "3 degrees"}, ANSWER]}
    (e,), findings = check_file(write_jsonl(tmp_path / "t.jsonl", [row]))
    assert findings == []
    assert e.tools == (SPEC,)
    assert e.messages[1].tool_calls == (ToolCall("get_weather", {"city": "Oslo"}),)
    assert e.messages[2] == Message("tool", "3 degrees", name="get_weather")


@pytest.mark.parametrize("tools", [json.dumps([SPEC]), [SPEC], TOOLS, json.dumps(TOOLS)])
def test_sharegpt_function_call_and_observation_with_tools_as_text_or_list(tmp_path, tools):
    row = {**GOOD_SHAREGPT, "tools": tools, "system": "Be brief."}
    (e,), findings = check_file(write_jsonl(tmp_path / "t.jsonl", [row]))
    assert findings == []
    assert e.tools == (SPEC,)
    assert [m.role for m in e.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert e.messages[2].tool_calls == (ToolCall("get_weather", {"city": "Oslo", "days": 2}),)
    assert e.messages[3].content == '{"temp": 3}'


def test_sharegpt_function_call_turn_with_a_list_of_calls(tmp_path):
    calls = [{"name": "get_weather", "arguments": {"city": c}} for c in ("Oslo", "Rome")]
    row = sharegpt_row({"from": "human", "value": "Oslo and Rome?"},
                       {"from": "function_call", "value": json.dumps(calls)}, SHARE_OBS, SHARE_OBS,
                       {"from": "gpt", "value": "Both cold."})
    (e,), findings = check_file(write_jsonl(tmp_path / "t.jsonl", [row]))
    assert findings == [] and len(e.messages[1].tool_calls) == 2


def test_content_parts_text_and_value_are_joined_in_order(tmp_path):
    row = {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "First."},
                                     {"type": "text", "value": "Second."},
                                     {"type": "text", "text": "Third."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Done."}]}]}
    (e,), findings = check_file(write_jsonl(tmp_path / "t.jsonl", [row]))
    assert findings == []
    assert [m.content for m in e.messages] == ["Be brief.", "First.\nSecond.\nThird.", "Done."]


def test_json_array_file_reads_tool_rows_and_places_findings_on_their_lines(tmp_path):
    bad = openai_row(USER, call('{"days": "two"}'), RESULT, ANSWER)
    path = tmp_path / "t.json"
    path.write_text(json.dumps([GOOD_OPENAI, bad], indent=2))
    examples, findings = check_file(path)
    assert len(examples) == 1 and examples[0].tools == (SPEC,)
    (f,) = findings
    assert (f.field, f.code) == ("messages[1].tool_calls[0].function.arguments", "arguments_mismatch")
    lines = path.read_text().splitlines()
    # The finding points at the line of the bad call's arguments in the second row.
    assert '"days\\": \\"two\\"' in lines[f.line - 1]
    assert "'city' is a required property" in f.message and "'two' is not of type 'integer'" in f.message


def test_csv_cells_hold_messages_and_tools_as_json_text(tmp_path):
    path = tmp_path / "t.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["messages", "tools"])
        w.writerow([json.dumps(GOOD_OPENAI["messages"]), json.dumps(TOOLS)])
        w.writerow([json.dumps([USER, call(name="get_time"), RESULT, ANSWER]), json.dumps(TOOLS)])
    examples, findings = check_file(path)
    assert [e.line for e in examples] == [2] and examples[0].tools == (SPEC,)
    assert examples[0].messages[1].tool_calls[0].arguments == {"city": "Oslo", "days": 2}
    assert found(findings) == [(3, "messages[1].tool_calls[0].function.name", "undeclared_tool")]


@pytest.mark.parametrize("row, expected", [
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
     Example([Message("user", "Hi"), Message("assistant", "Hello")], source="d.jsonl", line=3)),
    ({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello", "weight": 0},
                   {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Yes"}],
      "id": 7},
     Example([Message("system", "S"), Message("user", "Hi"), Message("assistant", "Hello", 0.0),
              Message("user", "Again"), Message("assistant", "Yes")], source="d.jsonl", line=3,
             meta={"id": 7})),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
      "system": "S"},
     Example([Message("system", "S"), Message("user", "Hi"), Message("assistant", "Hello")],
             source="d.jsonl", line=3)),
    ({"instruction": "Add", "input": "2 and 2", "output": "4"},
     Example([Message("user", "Add\n\n2 and 2"), Message("assistant", "4")], source="d.jsonl",
             line=3)),
])
def test_rows_without_tools_read_exactly_as_before(row, expected):
    example, findings = to_example(row, detect_format(row), "d.jsonl", 3)
    assert findings == []
    assert example == expected
    assert example.tools == () and all(not m.tool_calls and m.tool_call_id is None
                                       and m.name is None for m in example.messages)


# -- malformed rows, one planted defect per line ----------------------------------------

OPENAI_DEFECTS = [
    # (row, [(field, code)], a word the message must hold)
    (GOOD_OPENAI, [], None),
    (openai_row(USER, call("{city: Oslo"), RESULT, ANSWER),
     [("messages[1].tool_calls[0].function.arguments", "bad_arguments_json")], "not valid JSON"),
    (openai_row(USER, call("{}"), RESULT, ANSWER),
     [("messages[1].tool_calls[0].function.arguments", "arguments_mismatch")],
     "'city' is a required property"),
    (openai_row(USER, call('{"city": 5}'), RESULT, ANSWER),
     [("messages[1].tool_calls[0].function.arguments", "arguments_mismatch")],
     "5 is not of type 'string'"),
    (openai_row(USER, call('{"city": "Oslo"}', name="get_time"), RESULT, ANSWER),
     [("messages[1].tool_calls[0].function.name", "undeclared_tool")], "'get_time'"),
    (openai_row(USER, call(), {**RESULT, "tool_call_id": "c9"}, RESULT, ANSWER),
     [("messages[2].tool_call_id", "unmatched_tool_result")], "'c9'"),
    (openai_row(USER, call(), {"role": "user", "content": "And Rome?"}, ANSWER),
     [("messages[1].tool_calls[0].function", "unanswered_call")], "next user turn"),
    (openai_row(USER, ANSWER, tools={"name": "get_weather"}), [("tools", "bad_tools")],
     "must be a list"),
    (openai_row(USER, ANSWER, tools=[{"type": "function", "function": {"description": "no name"}}]),
     [("tools[0].function.name", "bad_tools")], "'name'"),
    (openai_row(USER, ANSWER, tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "objekt"}}}]),
     [("tools[0].function.parameters", "bad_tool_schema")], "not a valid JSON Schema"),
    (openai_row(USER, ANSWER, tools=TOOLS + TOOLS),
     [("tools[1].function.name", "duplicate_tool")], "declared twice"),
    (openai_row(USER, call(arguments='"Oslo"'), RESULT, ANSWER),
     [("messages[1].tool_calls[0].function.arguments", "bad_arguments_json")], "JSON object"),
    (openai_row(USER, call(), RESULT, ANSWER, tools=[]),
     [("messages[1].tool_calls[0].function.name", "undeclared_tool")], "declared: none"),
    (openai_row({"role": "user", "content": [{"type": "text", "text": "See"},
                                             {"type": "image_url", "image_url": {"url": "x.png"}}]},
                ANSWER), [("messages[0].content[1].type", "non_text_part")], "'image_url'"),
    (openai_row({"role": "user", "content": [{"type": "text"}]}, ANSWER),
     [("messages[0].content[0]", "bad_content_part")], "'text'"),
    ({"functions": [SPEC], "messages": [
        USER, {"role": "assistant", "function_call": {"name": "get_weather", "arguments": '{"city": 1}'}},
        {"role": "function", "name": "get_weather", "content": "x"}, ANSWER]},
     [("messages[1].function_call.arguments", "arguments_mismatch")], "1 is not of type"),
    ({"functions": [SPEC], "messages": [
        USER, {"role": "function", "name": "get_weather", "content": "x"}, ANSWER]},
     [("messages[1].name", "unmatched_tool_result")], "'get_weather'"),
]


def test_every_openai_defect_is_named_with_its_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row for row, _, _ in OPENAI_DEFECTS])
    examples, findings = check_file(path)
    assert [e.line for e in examples] == [1]
    expected = [(line, field, code) for line, (_, wanted, _) in enumerate(OPENAI_DEFECTS, start=1)
                for field, code in wanted]
    assert found(findings) == expected
    for f in findings:
        word = OPENAI_DEFECTS[f.line - 1][2]
        assert word in f.message, (f.line, f.message)
        assert f.is_error


SHAREGPT_DEFECTS = [
    (GOOD_SHAREGPT, []),
    (sharegpt_row({"from": "human", "value": "x"}, SHARE_OBS, {"from": "gpt", "value": "y"}),
     [("conversations[1]", "unmatched_tool_result")]),
    (sharegpt_row({"from": "human", "value": "x"}, {"from": "function_call", "value": "get_weather(Oslo)"},
                  SHARE_OBS, {"from": "gpt", "value": "y"}), [("conversations[1].value", "bad_tool_call")]),
    (sharegpt_row({"from": "human", "value": "x"},
                  {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"days": 2}})},
                  SHARE_OBS, {"from": "gpt", "value": "y"}),
     [("conversations[1].value.arguments", "arguments_mismatch")]),
    (sharegpt_row({"from": "human", "value": "x"},
                  {"from": "function_call", "value": json.dumps({"name": "search", "arguments": {}})},
                  SHARE_OBS, {"from": "gpt", "value": "y"}),
     [("conversations[1].value.name", "undeclared_tool")]),
    (sharegpt_row({"from": "human", "value": "x"}, SHARE_CALL, {"from": "human", "value": "y"},
                  {"from": "gpt", "value": "z"}), [("conversations[1].value", "unanswered_call")]),
    (sharegpt_row({"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}, tools="[{"),
     [("tools", "bad_tools")]),
]


def test_every_sharegpt_defect_is_named_with_its_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row for row, _ in SHAREGPT_DEFECTS])
    examples, findings = check_file(path)
    assert [e.line for e in examples] == [1]
    expected = [(line, field, code) for line, (_, wanted) in enumerate(SHAREGPT_DEFECTS, start=1)
                for field, code in wanted]
    assert found(findings) == expected


def test_a_malformed_call_is_one_finding_not_three(tmp_path):
    # The result after a call that cannot be read answers nothing only because the call
    # was left out; reporting it too would send the user after a defect that is not there.
    row = openai_row(USER, call("{broken"), RESULT, ANSWER)
    _, findings = check_file(write_jsonl(tmp_path / "t.jsonl", [row]))
    assert [f.code for f in findings] == ["bad_arguments_json"]


def test_a_call_left_open_at_the_end_is_not_an_error(tmp_path):
    # A row may end on the call (the model learns to call); open_calls counts it.
    from tunelab.data.tools import open_calls

    (e,), findings = check_file(write_jsonl(tmp_path / "t.jsonl", [openai_row(USER, call())]))
    assert findings == [] and open_calls(e.messages) == 1


# -- the real LLaMA-Factory tool file ---------------------------------------------------

# Checked by eye, each against its row's declaration (../shared/data/README.md); a call's
# finding is on the line of its turn's "value", a stray observation's on its turn's first line:
LLAMAFACTORY_DEFECTS = [
    # calculate_area's schema requires all five dimensions; the call gives length and width
    (171, "conversations[1].value.arguments", "arguments_mismatch"),
    # search_books requires 'keywords'; the call gives only 'author'
    (643, "conversations[5].value.arguments", "arguments_mismatch"),
    # cuisine must be one of the English enum values; the call says '意大利'
    (3072, "conversations[1].value.arguments", "arguments_mismatch"),
    # one row, three calls of calculate_area, each with only its shape's dimensions
    (3206, "conversations[1].value.arguments", "arguments_mismatch"),
    (3222, "conversations[5].value.arguments", "arguments_mismatch"),
    (3238, "conversations[9].value.arguments", "arguments_mismatch"),
    (4346, "conversations[5].value.arguments", "arguments_mismatch"),  # a copy of line 643's row
    # the call is written as text in a gpt turn ('AI 计算折扣: {...}'), so the observation
    # after it answers no call
    (5829, "conversations[2]", "unmatched_tool_result"),
    (7117, "conversations[1].value.arguments", "arguments_mismatch"),  # a copy of 3072's row
    (8773, "conversations[2]", "unmatched_tool_result"),  # 'AI计算抵押贷款支付：{...}' as text
]


def test_llamafactory_glaive_toolcall_file_has_ten_real_defects():
    examples, findings = check_file(shared_file("llamafactory_zh/glaive_toolcall_zh_demo.json"))
    errors = [(f.line, f.field, f.code) for f in findings if f.is_error]
    assert errors == LLAMAFACTORY_DEFECTS
    assert Counter(c for _, _, c in errors) == {"arguments_mismatch": 8, "unmatched_tool_result": 2}
    rejected = {line for f in findings if f.is_error for line in f.row_lines}
    assert len(rejected) == 8 and len(examples) == 292
    # 192 accepted rows declare functions (the others have "tools": "[]" and plain turns);
    # 151 of them call, 206 calls in all, each answered by one observation.
    assert sum(bool(e.tools) for e in examples) == 192
    assert sum(any(m.tool_calls for m in e.messages) for e in examples) == 151
    calls = sum(len(m.tool_calls) for e in examples for m in e.messages)
    results = sum(m.role == "tool" for e in examples for m in e.messages)
    assert calls == results == 206
