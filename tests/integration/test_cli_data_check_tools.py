"""`tunelab data check` on tool-call and content-part files, through the real entry point:
well-formed OpenAI, ShareGPT and content-part files pass; every planted defect is named
with its line, in the text output and in --json."""

from __future__ import annotations

import json

import pytest

from tunelab.cli.main import main

SPEC = {"name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string"},
                                      "unit": {"type": "string", "enum": ["C", "F"]}},
                       "required": ["city"]}}
TOOLS = [{"type": "function", "function": SPEC}]
CITIES = ["Oslo", "Rome", "Lima", "Pune", "Kyiv", "Doha", "Baku", "Riga", "Nice", "Bern",
          "Cork", "Graz"]


def openai_row(i, city):
    return {"tools": TOOLS, "messages": [
        {"role": "system", "content": "You answer weather questions."},
        {"role": "user", "content": f"How warm is {city} today, in C?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": "get_weather",
                          "arguments": json.dumps({"city": city, "unit": "C"})}}]},
        {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps({"temp": i})},
        {"role": "assistant", "content": f"It is {i} degrees in {city}."}]}


def sharegpt_row(i, city):
    return {"system": "You answer weather questions.", "tools": json.dumps([SPEC]),
            "conversations": [
                {"from": "human", "value": f"How warm is {city} today?"},
                {"from": "function_call",
                 "value": json.dumps({"name": "get_weather", "arguments": {"city": city}})},
                {"from": "observation", "value": json.dumps({"temp": i})},
                {"from": "gpt", "value": f"It is {i} degrees in {city}."}]}


def parts_row(i, city):
    return {"messages": [
        {"role": "user", "content": [{"type": "text", "text": f"Describe {city}."},
                                     {"type": "text", "value": f"Keep it to {i + 1} words."}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"{city}: a city, {i} km wide."}]}]}


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("make, tools", [(openai_row, True), (sharegpt_row, True),
                                         (parts_row, False)],
                         ids=["openai", "sharegpt", "content_parts"])
def test_well_formed_files_are_accepted(tmp_path, tiny_model_dir, capsys, make, tools):
    path = write(tmp_path / "good.jsonl", [make(i, c) for i, c in enumerate(CITIES)])
    code = main(["data", "check", str(path), "--model", str(tiny_model_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "error:" not in out
    fmt = "sharegpt" if make is sharegpt_row else "chat"
    assert f"{path}: ok: {fmt}, 12 rows read, 12 accepted, 0 rejected; 0 error(s)" in out
    tools_line = f"{path}: tools: 12 row(s) declare functions (1 distinct name); 12 call(s) in " \
                 "12 row(s) (at most 1 per row), 12 result(s), 0 unanswered, 0 left open"
    assert (tools_line in out) is tools

    assert main(["data", "check", str(path), "--model", str(tiny_model_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (file,) = report["files"]
    assert file["ok"] and file["errors"] == 0 and file["accepted"] == 12
    assert file["tokens"]["min"] > (60 if tools else 5)  # the tools block is counted


def call(city, name="get_weather", ident="c1", arguments=None):
    args = json.dumps({"city": city}) if arguments is None else arguments
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": ident, "type": "function", "function": {"name": name, "arguments": args}}]}


USER = {"role": "user", "content": "Weather?"}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": "3 degrees"}
ANSWER = {"role": "assistant", "content": "3 degrees."}

# One planted defect per line, after ten good rows: (row, field, code).
DEFECTS = [
    ({"tools": TOOLS, "messages": [USER, call("Oslo", arguments="{city: Oslo}"), RESULT, ANSWER]},
     "messages[1].tool_calls[0].function.arguments", "bad_arguments_json"),
    ({"tools": TOOLS, "messages": [USER, call("Oslo", arguments='{"unit": "C"}'), RESULT, ANSWER]},
     "messages[1].tool_calls[0].function.arguments", "arguments_mismatch"),
    ({"tools": TOOLS, "messages": [USER, call("Oslo", arguments='{"city": "Oslo", "unit": "K"}'),
                                   RESULT, ANSWER]},
     "messages[1].tool_calls[0].function.arguments", "arguments_mismatch"),
    ({"tools": TOOLS, "messages": [USER, call("Oslo", name="get_time"), RESULT, ANSWER]},
     "messages[1].tool_calls[0].function.name", "undeclared_tool"),
    ({"tools": TOOLS, "messages": [USER, {**RESULT, "tool_call_id": "c7"}, ANSWER]},
     "messages[1].tool_call_id", "unmatched_tool_result"),
    ({"tools": TOOLS, "messages": [USER, call("Oslo"), USER, ANSWER]},
     "messages[1].tool_calls[0].function", "unanswered_call"),
    ({"tools": "get_weather(city)", "messages": [USER, ANSWER]}, "tools", "bad_tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"required": "city"}}}],
      "messages": [USER, ANSWER]}, "tools[0].function.parameters", "bad_tool_schema"),
    ({"tools": TOOLS + TOOLS, "messages": [USER, ANSWER]}, "tools[1].function.name",
     "duplicate_tool"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}}]},
                   ANSWER]}, "messages[0].content[0].type", "non_text_part"),
]


def test_every_planted_defect_is_named_with_its_line(tmp_path, capsys):
    good = [openai_row(i, c) for i, c in enumerate(CITIES[:10])]
    path = write(tmp_path / "bad.jsonl", good + [row for row, _, _ in DEFECTS])
    expected = [(11 + i, field, code) for i, (_, field, code) in enumerate(DEFECTS)]

    assert main(["data", "check", str(path), "--model", "none", "--json"]) == 1
    (file,) = json.loads(capsys.readouterr().out)["files"]
    errors = [(f["line"], f["field"], f["code"]) for f in file["findings"]
              if f["severity"] == "error"]
    assert errors == expected
    assert (file["accepted"], file["rejected"]) == (10, 10)

    assert main(["data", "check", str(path), "--model", "none"]) == 1
    out = capsys.readouterr().out
    for line, field, code in expected:
        assert f"error: {path}:{line} {field}: [{code}] " in out
    assert f"{path}: FAILED: chat, 20 rows read, 10 accepted, 10 rejected; 10 error(s)" in out
    assert f"{path}: tools: 10 row(s) declare functions (1 distinct name); 10 call(s) in 10 " \
           "row(s) (at most 1 per row), 10 result(s), 1 unanswered, 0 left open" in out


def test_profile_prints_and_reports_the_tool_counts(tmp_path, capsys):
    path = write(tmp_path / "share.jsonl", [sharegpt_row(i, c) for i, c in enumerate(CITIES)])
    out_dir = tmp_path / "report"
    assert main(["data", "profile", str(path), "--model", "none", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: tools: 12 row(s) declare functions (1 distinct name); 12 call(s)" in out
    assert "<h3>Tools</h3>" in (out_dir / "index.html").read_text()
    assert main(["data", "profile", str(path), "--model", "none", "--out", str(out_dir),
                 "--json"]) == 0
    (file,) = json.loads(capsys.readouterr().out)["files"]
    assert file["tools"]["functions"] == {"get_weather": 12}
    assert file["tools"]["calls_per_row"]["histogram"] == {"1": 12}
