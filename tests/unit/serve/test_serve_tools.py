"""Tools over HTTP, below the routes: a request's tools and tool turns read with the data
readers and rendered to the ids training produced; calls read back out of an answer."""

from __future__ import annotations

import json

import pytest

from tunelab.data.example import Example, Message, ToolCall
from tunelab.data.template import IGNORE_INDEX, render_prompt_ids, tokenize_example
from tunelab.serve.app.errors import APIError
from tunelab.serve.app.schemas import ChatRequest
from tunelab.serve.app.tooluse import answer_calls
from tunelab.serve.registry import ServedModel

WEATHER = {"name": "get_weather", "description": "Weather of a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
TOOLS = [{"type": "function", "function": WEATHER}]
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
HISTORY = [{"role": "system", "content": "You help with the weather."},
           {"role": "user", "content": [{"type": "text", "text": "Weather"},
                                        {"type": "text", "text": "in Paris?"}]},
           {"role": "assistant", "content": None, "tool_calls": [CALL]},
           {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
           {"role": "assistant", "content": "It is sunny."},
           {"role": "user", "content": "And in Lyon?"}]

# A ChatML template that renders tools itself (as Qwen's does): declarations in a system
# turn, calls inside <tool_call> tags.
TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools:{% for t in tools %}\n{{ t | tojson }}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}{%- if m.role == 'assistant' and m.tool_calls %}"
    "<|im_start|>assistant\n{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}"
    "</tool_call>{% endfor %}<|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _request(**extra) -> ChatRequest:
    return ChatRequest.model_validate({"model": "m", "messages": HISTORY, "tools": TOOLS, **extra})


def _served(tok, template: str, tool_format: str | None) -> ServedModel:
    from tunelab.data.template import resolve_tool_format

    # render() needs no engine: the tokenizer, template and tool format only
    return ServedModel("m", None, None, tok, template, None, 512,  # type: ignore[arg-type]
                       tool_format=resolve_tool_format(tok, template, tool_format))


def _training_prompt(tok, template: str, tool_format: str, conv) -> list[int]:
    """The ids training puts before the last answer of the same conversation."""
    answer = Message("assistant", "", tool_calls=(ToolCall("get_weather", {"city": "Lyon"}, "c2"),))
    # earlier answers untrained (weight 0), so the first trained id starts the last answer
    msgs = [Message(m.role, m.content, 0, m.tool_calls, m.tool_call_id) if m.role == "assistant"
            else m for m in conv.messages]
    row = tokenize_example(tok, Example([*msgs, answer], tools=conv.tools), template, tool_format)
    first = next(i for i, label in enumerate(row.labels) if label != IGNORE_INDEX)
    return row.input_ids[:first]


@pytest.mark.parametrize("tool_format", ["fallback", "template"])
def test_a_served_chat_with_tools_renders_the_ids_training_rendered(tiny_tokenizer, tool_format):
    from tiny import CHATML_TEMPLATE

    template = TOOL_TEMPLATE if tool_format == "template" else CHATML_TEMPLATE
    conv = _request().conversation()
    assert conv.tools == (WEATHER,) and conv.read_calls
    assert conv.messages[1].content == "Weather\nin Paris?"  # parts joined as training joins
    assert conv.messages[2].tool_calls == (ToolCall("get_weather", {"city": "Paris"}, "call_1"),)
    served = _served(tiny_tokenizer, template, tool_format).render(conv.messages, conv.tools)
    trained = _training_prompt(tiny_tokenizer, template, tool_format, conv)
    assert served == trained
    text = tiny_tokenizer.decode(served)
    assert "get_weather" in text and "Lyon" in text and '"sky": "sunny"' in text
    if tool_format == "template":
        assert "<tool_call>" in text
    else:
        assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in text


def test_a_plain_chat_renders_as_before_tools_existed(tiny_tokenizer):
    from tiny import CHATML_TEMPLATE

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    conv = ChatRequest.model_validate({"model": "m", "messages": chat}).conversation()
    assert not conv.tools and not conv.read_calls
    for fmt in ("fallback", None):
        assert _served(tiny_tokenizer, CHATML_TEMPLATE, fmt).render(conv.messages) == \
            render_prompt_ids(tiny_tokenizer, chat, CHATML_TEMPLATE)
    assert json.loads(ChatRequest.model_validate({"model": "m", "messages": chat}).log_prompt()) \
        == chat  # the request log keeps the same JSON as before


@pytest.mark.parametrize(("change", "param", "code"), [
    ({"tools": {"name": "get_weather"}}, "tools", "bad_tools"),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]},
     "tools[0].function.name", "bad_tools"),
    ({"tools": [{"type": "function", "function": {**WEATHER, "parameters": {"type": 7}}}]},
     "tools[0].function.parameters", "bad_tool_schema"),
    # the reader names a duplicate by its bare path (tunelab.data.tools.read_tools)
    ({"tools": TOOLS * 2}, "tools[1].function.name", "duplicate_tool"),
    ({"messages": [HISTORY[1], {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "get_weather", "arguments": "{city: Paris"}}]}]},
     "messages[1].tool_calls[0].function.arguments", "bad_arguments_json"),
    ({"messages": [HISTORY[1], {"role": "tool", "tool_call_id": "call_9", "content": "x"}]},
     "messages[1].tool_call_id", "unmatched_tool_result"),
    ({"messages": [HISTORY[1], {"role": "tool", "content": "x"}]},
     "messages[1].tool_call_id", "bad_tool_result"),
    ({"messages": [HISTORY[1], HISTORY[2], {"role": "user", "content": "hm?"}]},
     "messages[1].tool_calls[0]", "unanswered_call"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].type", "non_text_part"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": [CALL]}]},
     "messages[0].tool_calls", "bad_tool_call"),
    ({"tools": [{"type": "function", "function": {**WEATHER, "parameters": {
        "$ref": "https://example.com/schema.json"}}}]},
     "tools[0].function.parameters", "bad_tool_schema"),  # nothing is fetched
    ({"messages": [HISTORY[1], {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "get_weather", "arguments": "[" * 100_000}}]}]},
     "messages[1].tool_calls[0].function.arguments", "bad_arguments_json"),  # not a 500
    ({"tool_choice": "required"}, "tool_choice", "unsupported_tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     "tool_choice", "unsupported_tool_choice"),
])
def test_a_bad_tool_request_is_a_400_naming_the_field(change, param, code):
    with pytest.raises(APIError) as e:
        _request(**change).conversation()
    assert e.value.status == 400 and e.value.param == param and e.value.code == code
    assert e.value.message.startswith(param)


def test_a_history_call_that_breaks_its_schema_is_rendered_not_refused():
    bad = {**CALL, "function": {"name": "get_weather", "arguments": '{"town": 3}'}}
    conv = _request(messages=[HISTORY[1], {"role": "assistant", "tool_calls": [bad]},
                              {**HISTORY[3]}]).conversation()
    assert conv.messages[1].tool_calls[0].arguments == {"town": 3}


def test_tool_choice_none_renders_the_tools_and_reads_no_calls():
    conv = _request(tool_choice="none").conversation()
    assert conv.tools == (WEATHER,) and not conv.read_calls


def test_calls_are_read_out_of_an_answer():
    text = 'Let me look.\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
    a = answer_calls(text, [WEATHER])
    assert a.content == "Let me look." and len(a.calls) == 1
    c = a.calls[0]
    assert c["id"].startswith("call_") and len(c["id"]) == 29 and c["type"] == "function"
    assert c["function"]["name"] == "get_weather"
    assert json.loads(c["function"]["arguments"]) == {"city": "Paris"}
    assert a.log_text() == text  # the log keeps the text and the call as its JSON line
    only = answer_calls('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
                        "</tool_call>", [WEATHER])
    assert only.content is None and len(only.calls) == 1


def test_a_call_that_does_not_parse_or_is_undeclared_stays_text():
    broken = '{"name": "get_weather", "arguments": {"city": "Par'
    assert answer_calls(broken, [WEATHER]).calls == []
    assert answer_calls(broken, [WEATHER]).content == broken
    other = '{"name": "get_time", "arguments": {}}'
    assert answer_calls(other, [WEATHER]).calls == [] and answer_calls(other, [WEATHER]).content == other
    mixed = answer_calls(f'{other}\n{{"name": "get_weather", "arguments": {{"city": "Rome"}}}}',
                         [WEATHER])
    assert [c["function"]["name"] for c in mixed.calls] == ["get_weather"] and mixed.content == other
    assert answer_calls("Just text.", [WEATHER]).content == "Just text."


def test_parallel_tool_calls_false_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="parallel_tool_calls|cannot be honoured"):
        _request(parallel_tool_calls=False)
    assert _request(parallel_tool_calls=True).conversation().read_calls


def test_a_history_call_is_not_run_against_the_requests_schema():
    # A pattern that backtracks for ever on this argument, and a $ref to nothing: neither
    # is evaluated for a call already in the history (it is what a model said).
    slow = {**WEATHER, "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "pattern": "^(a+)+$"}, "x": {"$ref": "#/$defs/none"}}}}
    bad = {**CALL, "function": {"name": "get_weather",
                                "arguments": json.dumps({"city": "a" * 60 + "!", "x": 1})}}
    conv = _request(tools=[{"type": "function", "function": slow}],
                    messages=[HISTORY[1], {"role": "assistant", "tool_calls": [bad]},
                              {**HISTORY[3]}]).conversation()
    assert conv.messages[1].tool_calls[0].arguments["city"].endswith("!")
