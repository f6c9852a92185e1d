"""The data gate on tool-call rows: the profile's tools section, the HTML report, the
duplicate comparison with calls, and token lengths as training renders tool rows."""

from __future__ import annotations

import json

import pytest

from tunelab.data.example import Example, Message, ToolCall
from tunelab.data.template import tokenize_example
from tunelab.data.token_lengths import token_lengths
from tunelab.gate.check import check_data
from tunelab.gate.profile import profile_from_check, save_plots, tool_counts
from tunelab.gate.report import write_report

SPEC = {"name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}
CLOCK = {"name": "get_time", "parameters": {"type": "object", "properties": {}}}
TOOLS = [{"type": "function", "function": SPEC}, {"type": "function", "function": CLOCK}]


def call(*cities, ident="c"):
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"{ident}{i}", "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps({"city": c})}}
        for i, c in enumerate(cities)]}


def result(i, ident="c"):
    return {"role": "tool", "tool_call_id": f"{ident}{i}", "content": f"{10 + i} degrees"}


def user(text):
    return {"role": "user", "content": text}


def answer(text):
    return {"role": "assistant", "content": text}


def plain(i):
    return {"messages": [user(f"Where is parcel {i}{'?' * i}"),
                         answer(f"Parcel {i} ships on day {3 * i}.")]}


TOOL_ROWS = [
    {"tools": TOOLS, "messages": [user("Oslo and Rome?"), call("Oslo", "Rome"), result(0),
                                  result(1), answer("Cold and warm.")]},
    {"tools": TOOLS, "messages": [user("Bergen?"), call("Bergen"), result(0), answer("Rain.")]},
    {"tools": TOOLS[:1], "messages": [user("Paris?"), call("Paris")]},  # ends on the call
    {"tools": TOOLS, "messages": [user("Lima?"), call("Lima"), user("Hello?"),  # unanswered
                                  answer("Hi.")]},
    {"tools": TOOLS[1:], "messages": [user("Just chat."), answer("Sure.")]},  # declares, no call
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tool_file(tmp_path):
    return write_jsonl(tmp_path / "tools.jsonl", TOOL_ROWS + [plain(i) for i in range(8)])


def test_profile_counts_tools_calls_results_and_unanswered_calls(tool_file):
    result = check_data(tool_file, near_duplicates=False)
    assert (result.rows_read, result.accepted, result.rejected) == (13, 12, 1)
    tools = profile_from_check(result).summary()["tools"]
    assert tools["rows_with_tools"] == 4 and tools["rows_with_calls"] == 3
    assert tools["functions"] == {"get_time": 3, "get_weather": 3}
    assert tools["tools_per_row"]["max"] == 2 and tools["tools_per_row"]["total"] == 6
    assert tools["calls_per_row"]["histogram"] == {0: 9, 1: 2, 2: 1}
    assert tools["calls"] == 4 and tools["results"] == 3
    assert tools["unanswered_calls"] == 1  # line 4, rejected: counted from its finding
    assert tools["open_calls"] == 1  # line 3 ends on its call
    assert tools["tool_findings"] == {"unanswered_call": 1}


def test_files_without_tools_show_what_they_showed_before(tmp_path):
    path = write_jsonl(tmp_path / "plain.jsonl", [plain(i) for i in range(12)])
    result = check_data(path, near_duplicates=False)
    profile = profile_from_check(result)
    assert tool_counts(result) is None and profile.tools is None
    assert set(profile.summary()) == {
        "path", "format", "rows_read", "accepted", "rejected", "errors", "warnings",
        "finding_counts", "tokens", "turns", "roles", "columns", "labels", "notes"}
    assert "tool_calls" not in save_plots(profile, tmp_path / "plots")
    index = write_report(tmp_path / "report", [result])
    assert "<h3>Tools</h3>" not in index.read_text()


def test_report_shows_the_tools_section_and_the_calls_plot(tool_file, tmp_path):
    index = write_report(tmp_path / "report", [check_data(tool_file, near_duplicates=False)])
    text = index.read_text()
    assert "<h3>Tools</h3>" in text and "Tool calls per row" in text
    assert "<td>unanswered calls</td><td" in text and "<td>get_weather</td>" in text
    assert "tool_calls.png" in text
    (png,) = (tmp_path / "report").rglob("tool_calls.png")
    assert png.stat().st_size > 2000
    summary = json.loads((tmp_path / "report" / "profile.json").read_text())
    assert summary["files"][0]["tools"]["calls"] == 4


def test_rows_differing_only_in_call_arguments_are_not_duplicates(tmp_path):
    def row(city):
        return {"tools": TOOLS, "messages": [user("Weather?"), call(city), result(0),
                                             answer("Here it is.")]}

    rows = [row("Oslo"), row("Rome"), row("Oslo")] + [plain(i) for i in range(10)]
    checked = check_data(write_jsonl(tmp_path / "d.jsonl", rows), near_duplicates=False)
    dups = [f for f in checked.findings if f.code == "exact_duplicate"]
    assert [f.line for f in dups] == [3]  # the second Oslo row, not the Rome one
    assert "line 1" in dups[0].message


TOOLS_TEMPLATE = (  # ChatML that renders declarations and calls itself (transformers' tools=)
    "{% if tools %}<|im_start|>system\nTools:{% for t in tools %}\n{{ t | tojson }}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}"
    "</tool_call>{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tool_example():
    return Example([Message("user", "Oslo?"),
                    Message("assistant", "", tool_calls=(ToolCall("get_weather", {"city": "Oslo"}, "c0"),)),
                    Message("tool", "3 degrees", tool_call_id="c0"),
                    Message("assistant", "3 degrees in Oslo.")], tools=(SPEC, CLOCK))


@pytest.mark.parametrize("template", [None, TOOLS_TEMPLATE], ids=["fallback", "template"])
def test_tool_row_lengths_count_what_training_renders(tiny_tokenizer, template):
    e = tool_example()
    bare = Example([Message(m.role, m.content) for m in e.messages
                    if m.role != "tool" and (m.content or m.tool_calls)])
    plain_rows = [Example([Message("user", "Hi"), Message("assistant", "Hello")])] * 40
    lengths = token_lengths(tiny_tokenizer, [e, *plain_rows, e], template)
    trained = len(tokenize_example(tiny_tokenizer, e, template).input_ids)
    assert lengths[0] == lengths[-1] == trained
    # The declarations and the call are in it: far more than the turns' bare text.
    assert trained > token_lengths(tiny_tokenizer, [bare], template)[0] + 20
    assert lengths[1:-1] == [len(tokenize_example(tiny_tokenizer, plain_rows[0], template))] * 40


def test_check_data_measures_tool_rows_with_the_tools_block(tiny_tokenizer, tool_file):
    result = check_data(tool_file, tokenizer=tiny_tokenizer, near_duplicates=False)
    assert result.token_lengths == [len(tokenize_example(tiny_tokenizer, e).input_ids)
                                    for e in result.examples]
