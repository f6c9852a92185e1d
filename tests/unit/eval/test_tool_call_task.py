"""The tool_call task: rows from tool-call files, and every metric of the scorer.

The model is a plain function that answers each prompt with a fixed text, so each
metric is checked against numbers worked out by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunelab.data.example import Example, Message, ToolCall
from tunelab.data.load import load_examples
from tunelab.data.tools import arguments_problems
from tunelab.errors import DataError
from tunelab.eval.compare import compare_results
from tunelab.eval.tasks import ModelCallables
from tunelab.eval.tool_calls import run_tool_call, score_answer, tool_call_rows

WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object",
                          "properties": {"city": {"type": "string"},
                                         "unit": {"type": "string", "enum": ["c", "f"]}},
                          "required": ["city"]}}
ORDER = {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}}
TOOLS = (WEATHER, ORDER)
PARIS = ToolCall("get_weather", {"city": "Paris", "unit": "c"})


def call(name: str, **args) -> str:
    return json.dumps({"name": name, "arguments": args})


def example(answer: Message, tools=TOOLS, line=1, before=()) -> Example:
    return Example(messages=[Message("user", "question"), *before, answer], source="t.jsonl",
                   line=line, tools=tools)


def calling(*calls: ToolCall) -> Message:
    return Message("assistant", "", tool_calls=calls)


def answering(model_answers: list[str]) -> ModelCallables:
    seen: dict = {}

    def predict(chats, tools=None):
        seen["chats"], seen["tools"] = chats, tools
        return list(model_answers)

    m = ModelCallables("fake", predict)
    m.seen = seen  # type: ignore[attr-defined]
    return m


# -- one answer ---------------------------------------------------------------------


def test_exact_call_after_normalization_scores_every_metric_as_right():
    s = score_answer('{"name": "get_weather", "arguments": {"unit": "c",  "city": "Paris"}}',
                     [PARIS], TOOLS)
    assert s["exact"] and s["name_correct"] and s["valid_json"] and s["schema_valid"]
    assert s["argument_accuracy"] == 1.0 and s["missed_call"] is False and s["false_call"] is None
    assert s["correct"] is True


def test_calls_in_tool_call_tags_and_around_text_are_read():
    s = score_answer(f"Let me check.\n<tool_call>\n{call('get_weather', city='Paris', unit='c')}"
                     "\n</tool_call>", [PARIS], TOOLS)
    assert s["exact"] and s["content"] == "Let me check."


def test_one_wrong_argument_value_halves_argument_accuracy_and_breaks_exact_only():
    s = score_answer(call("get_weather", city="Paris", unit="f"), [PARIS], TOOLS)
    assert s["name_correct"] and s["valid_json"] and s["schema_valid"]
    assert s["exact"] is False and s["argument_accuracy"] == 0.5


def test_schema_mismatch_is_named_and_breaks_schema_validity():
    s = score_answer(call("get_weather", unit="k"), [PARIS], TOOLS)
    assert s["valid_json"] is True and s["schema_valid"] is False
    assert any("'city' is a required property" in p for p in s["problems"])
    assert any("'k' is not one of" in p for p in s["problems"])
    assert s["argument_accuracy"] == 0.0  # neither expected value was given


def test_invalid_json_is_a_call_with_no_arguments():
    s = score_answer('{"name": "get_weather", "arguments": {"city": "Par', [PARIS], TOOLS)
    assert s["called"] and s["name_correct"]
    assert s["valid_json"] is False and s["schema_valid"] is False and s["exact"] is False
    assert s["argument_accuracy"] == 0.0 and s["calls"][0]["arguments"] is None


def test_wrong_function_counts_no_argument_even_with_equal_values():
    s = score_answer(call("lookup_order", city="Paris", unit="c"), [PARIS], TOOLS)
    assert s["name_correct"] is False and s["exact"] is False and s["argument_accuracy"] == 0.0
    assert s["schema_valid"] is False  # lookup_order requires order_id
    assert any("'order_id' is a required property" in p for p in s["problems"])


def test_undeclared_function_is_schema_invalid():
    s = score_answer(call("get_time", zone="UTC"), [PARIS], TOOLS)
    assert s["schema_valid"] is False and "'get_time' is not declared" in s["problems"][0]


def test_no_call_when_one_is_expected_is_a_missed_call():
    s = score_answer("It is sunny in Paris.", [PARIS], TOOLS)
    assert s["missed_call"] is True and s["called"] is False and s["exact"] is False
    assert s["valid_json"] is None and s["schema_valid"] is None and s["name_correct"] is False


def test_a_call_when_none_is_expected_is_a_false_call():
    s = score_answer(call("get_weather", city="Paris"), [], TOOLS)
    assert s["false_call"] is True and s["correct"] is False
    assert s["exact"] is None and s["name_correct"] is None and s["missed_call"] is None
    plain = score_answer("You're welcome!", [], TOOLS)
    assert plain["false_call"] is False and plain["correct"] is True


def test_several_calls_compare_in_order_and_count_arguments_per_position():
    expected = [PARIS, ToolCall("lookup_order", {"order_id": 7})]
    both = call("get_weather", city="Paris", unit="c") + "\n" + call("lookup_order", order_id=7)
    assert score_answer(both, expected, TOOLS)["exact"] is True
    swapped = call("lookup_order", order_id=7) + "\n" + call("get_weather", city="Paris", unit="c")
    s = score_answer(swapped, expected, TOOLS)
    assert s["name_correct"] is False and s["exact"] is False and s["argument_accuracy"] == 0.0
    first_only = score_answer(call("get_weather", city="Paris", unit="c"), expected, TOOLS)
    assert first_only["name_correct"] is False and first_only["exact"] is False
    assert first_only["argument_accuracy"] == pytest.approx(2 / 3)


def test_an_extra_call_keeps_the_name_but_is_not_exact():
    two = call("get_weather", city="Paris", unit="c") + "\n" + call("lookup_order", order_id=1)
    s = score_answer(two, [PARIS], TOOLS)
    assert s["name_correct"] is True and s["exact"] is False and s["argument_accuracy"] == 1.0


def test_arguments_problems_lists_each_schema_error_by_path():
    assert arguments_problems(WEATHER, {"city": "Oslo"}) == []
    assert arguments_problems(WEATHER, {"city": 3}) == ["city: 3 is not of type 'string'"]
    assert arguments_problems({"name": "f"}, {"anything": 1}) == []
    assert arguments_problems(WEATHER, [1]) == ["the arguments must be a JSON object, got a list"]


# -- a whole set --------------------------------------------------------------------


def _set():
    """Six rows: four expect a call, two expect a plain answer."""
    exs = [example(calling(PARIS), line=1),
           example(calling(ToolCall("get_weather", {"city": "Oslo"})), line=2),
           example(calling(ToolCall("lookup_order", {"order_id": 42})), line=3),
           example(calling(ToolCall("lookup_order", {"order_id": 5})), line=4),
           example(Message("assistant", "Hello!"), line=5),
           example(Message("assistant", "It is 20 C in Paris."), line=6,
                   before=(calling(PARIS), Message("tool", '{"temp": 20}')))]
    answers = [call("get_weather", unit="c", city="Paris"),    # exact
               call("get_weather", city="Bergen"),              # wrong value
               '{"name": "lookup_order", "arguments": {"order_id": 4',  # broken JSON
               "I cannot look that up.",                         # missed call
               call("get_weather", city="Rome"),                # false call
               "It is 20 C in Paris."]                          # right: no call
    return tool_call_rows(exs), answers


def test_headline_rates_over_the_rows_they_are_defined_on():
    rows, answers = _set()
    model = answering(answers)
    r = run_tool_call(model, rows)
    m = r.metrics
    assert r.primary == "correct_call_rate" and r.task == "tool_call"
    assert m["rows"] == 6 and m["call_rows"] == 4 and m["no_call_rows"] == 2
    assert m["correct_call_rate"] == pytest.approx(1 / 4)
    assert m["name_accuracy"] == pytest.approx(3 / 4)
    assert m["missed_call_rate"] == pytest.approx(1 / 4)
    assert m["false_call_rate"] == pytest.approx(1 / 2)
    assert m["valid_json_rate"] == pytest.approx(3 / 4)  # over the 4 rows with a call made
    assert m["schema_valid_rate"] == pytest.approx(3 / 4)
    # per row: 1, 0 (city wrong), 0 (order_id broken), 0 (missed) -> mean 0.25
    assert m["argument_accuracy"] == pytest.approx(1 / 4)
    assert m["accuracy"] == pytest.approx(2 / 6)
    assert m["per_function"]["lookup_order"] == {"rows": 2, "correct_call_rate": 0.0,
                                                 "name_accuracy": 0.5}
    # the prompt is every turn before the last assistant turn; the tools go with it
    assert [msg.role for msg in model.seen["chats"][5]] == ["user", "assistant", "tool"]
    assert model.seen["tools"] == [TOOLS] * 6
    rec = r.rows[0]
    assert rec["reference"] == json.dumps({"name": "get_weather",
                                           "arguments": {"city": "Paris", "unit": "c"}})
    assert rec["expected"] == [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]
    assert rec["predicted"] == '{"arguments":{"city":"Paris","unit":"c"},"name":"get_weather"}'
    assert r.rows[5]["reference"] == "It is 20 C in Paris."


def test_stats_feed_slices_and_the_paired_comparison():
    rows, answers = _set()
    base = run_tool_call(answering(answers), rows)
    perfect = [call("get_weather", city="Paris", unit="c"), call("get_weather", city="Oslo"),
               call("lookup_order", order_id=42), call("lookup_order", order_id=5),
               "Hello!", "It is 20 C in Paris."]
    better = run_tool_call(answering(perfect), rows)
    better.model = "tuned"
    assert better.metrics["correct_call_rate"] == 1.0 and better.metrics["false_call_rate"] == 0.0
    assert base.stat("correct_call_rate", np.array([0, 0, 1])) == pytest.approx(2 / 3)
    assert base.stat("false_call_rate", np.array([0, 1])) is None  # no row without a call
    comp = compare_results([base, better], samples=100, seed=0)
    diff = comp["differences"]["tuned"]
    assert diff["correct_call_rate"]["diff"] == pytest.approx(0.75)
    assert diff["correct_call_rate"]["better"] is True
    assert diff["false_call_rate"]["better"] is True  # lower is better


def test_model_that_skips_an_answer_is_an_error():
    rows, answers = _set()
    with pytest.raises(DataError, match="5 answers for 6 prompts"):
        run_tool_call(answering(answers[:5]), rows)


# -- rows from files ----------------------------------------------------------------


def test_rows_from_openai_and_sharegpt_files(tmp_path):
    chat = tmp_path / "chat.jsonl"
    tools = [{"type": "function", "function": WEATHER}]
    chat.write_text(json.dumps({"tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}]}) + "\n")
    rows = tool_call_rows(load_examples(chat))
    assert rows[0].example.tools == (WEATHER,) and rows[0].id.endswith("chat.jsonl:1")
    assert rows[0].reference == '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    share = tmp_path / "share.jsonl"
    share.write_text(json.dumps({"tools": json.dumps([WEATHER]), "conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather",
                                                        "arguments": {"city": "Oslo"}})},
        {"from": "observation", "value": '{"temp": 3}'},
        {"from": "gpt", "value": "3 degrees."}]}) + "\n")
    (row,) = tool_call_rows(load_examples(share))
    assert row.reference == "3 degrees." and [m.role for m in row.prompt] == ["user", "assistant", "tool"]


def test_rows_without_an_assistant_turn_are_listed():
    exs = [example(calling(PARIS), line=1),
           Example(messages=[Message("user", "hi")], source="t.jsonl", line=2, tools=TOOLS),
           Example(messages=[Message("user", "hi"), Message("assistant", "hey"),
                             Message("user", "bye")], source="t.jsonl", line=3, tools=TOOLS)]
    with pytest.raises(DataError) as e:
        tool_call_rows(exs)
    assert "1 row(s) cannot be scored" in str(e.value)
    assert any("t.jsonl:2: no assistant turn" in f for f in e.value.findings)


def test_a_file_without_tools_is_refused():
    plain = [Example(messages=[Message("user", "hi"), Message("assistant", "hey")])]
    with pytest.raises(DataError, match="no row declares tools"):
        tool_call_rows(plain)
