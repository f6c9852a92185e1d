"""`tunelab serve` with tools, as the official `openai` client sees it: a tiny model trained
(`tunelab train`) on tool-call rows until it calls `get_weather` when asked for the weather,
served from its run on 127.0.0.1 beside a model never trained on tools and (with the
llamacpp extra) the run exported to GGUF."""

from __future__ import annotations

import importlib.util
import json
import time

import openai
import pytest
import yaml
from serve_server import Server, http_call, start_server

from gguf_files import needs_llamacpp
from tunelab.cli.main import main

pytestmark = pytest.mark.slow

WEATHER = {"name": "get_weather", "description": "Weather of a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
TOOLS = [{"type": "function", "function": WEATHER}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
GREEDY = {"model": "toolrun", "temperature": 0, "max_tokens": 80}


def _rows() -> list[dict]:
    call = {"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
    return [{"tools": TOOLS, "messages": [*ASK, {"role": "assistant", "content": None,
                                                 "tool_calls": [call]}]},
            {"tools": TOOLS, "messages": [{"role": "user", "content": "Hello"},
                                          {"role": "assistant", "content": "Hi there"}]}] * 4


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """A full fine-tune that learned the rows by heart (80 steps, a few seconds)."""
    tmp = tmp_path_factory.mktemp("toolrun")
    data = tmp / "tools.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    cfg = tmp / "toolrun.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_model_dir)}, "data": {"train": str(data), "max_length": 512},
        "train": {"method": "full", "learning_rate": 0.05, "batch_size": 4, "max_steps": 80,
                  "eval_every": 0},
        "output": {"dir": str(tmp / "runs"), "name": "toolrun"}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    run = tmp / "runs" / "toolrun"
    assert json.loads((run / "inputs.json").read_text())["tool_format"] == "fallback"
    return run


@pytest.fixture(scope="module")
def server(tmp_path_factory, run, tiny_model_dir):
    folder = tmp_path_factory.mktemp("serve-tools")
    aliases = {"plain": str(tiny_model_dir)}
    if importlib.util.find_spec("llama_cpp") is not None:  # else its test skips
        gguf = folder / "toolrun.gguf"
        assert main(["export", str(run), "--gguf", str(gguf)]) == 0
        aliases["toolrun-gguf"] = str(gguf)
    s = start_server(folder, [str(run)], {"aliases": aliases})
    yield s
    s.stop()


def _logged(server: Server, rid: str, timeout: float = 10.0):
    from tunelab.db import open_database, recent_requests

    with open_database(server.db_url) as db:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = [r for r in recent_requests(db, limit=1000) if r.request_id == rid]
            if hit:
                return hit[0]
            time.sleep(0.2)
    raise AssertionError(f"{rid} is not in the request log")


def test_a_call_comes_back_as_tool_calls(server):
    r = server.client().chat.completions.create(messages=ASK, tools=TOOLS, **GREEDY)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    row = _logged(server, r.id)  # the log keeps the call as its JSON line, and the turns
    assert json.loads(row.answer) == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert row.finish_reason == "tool_calls" and json.loads(row.prompt) == ASK
    status, _, fb = http_call(server, "POST", "/v1/feedback", {"response_id": r.id, "rating": "up"})
    assert status == 200, fb
    # the client's own message object goes back in the history, with the result (README)
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}]
    again = server.client().chat.completions.create(messages=history, tools=TOOLS, **GREEDY)
    assert again.usage.prompt_tokens > r.usage.prompt_tokens


def test_a_streamed_call_comes_as_one_tool_calls_delta(server):
    chunks = list(server.client().chat.completions.create(messages=ASK, tools=TOOLS, stream=True,
                                                          **GREEDY))
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id.startswith("call_")
    assert calls[0].type == "function" and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_turns_in_the_history_are_accepted_and_rendered_as_training_rendered(server, run):
    from tunelab.data.example import Example, Message, ToolCall
    from tunelab.data.template import IGNORE_INDEX, tokenize_example
    from tunelab.models.loading import load_tokenizer
    from tunelab.models.runs import run_tool_format

    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_7", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": [{"type": "text", "text": "sunny"}]}]
    r = server.client().chat.completions.create(messages=history, tools=TOOLS, **GREEDY)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # the same conversation as a training row: its prompt is what the server counted
    row = Example([Message("user", ASK[0]["content"]),
                   Message("assistant", "", 0, (ToolCall("get_weather", {"city": "Paris"}, "call_7"),)),
                   Message("tool", "sunny", tool_call_id="call_7"),
                   Message("assistant", "It is sunny.")], tools=(WEATHER,))
    tok = load_tokenizer(run / "tokenizer")
    ids = tokenize_example(tok, row, None, run_tool_format(run))
    assert r.usage.prompt_tokens == next(i for i, x in enumerate(ids.labels) if x != IGNORE_INDEX)


def test_an_answer_without_a_call_is_plain_content(server):
    client = server.client()
    r = client.chat.completions.create(messages=[{"role": "user", "content": "Hello"}],
                                       tools=TOOLS, **GREEDY)
    assert r.choices[0].message.content == "Hi there" and r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.tool_calls is None
    # tool_choice none: the same prompt, the call the model writes stays text
    r = client.chat.completions.create(messages=ASK, tools=TOOLS, tool_choice="none", **GREEDY)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert json.loads(r.choices[0].message.content)["name"] == "get_weather"
    # no tools: nothing is read out of the answer, whatever it says
    r = client.chat.completions.create(messages=ASK, **GREEDY)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason != "tool_calls"


@pytest.mark.parametrize(("change", "param"), [
    ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0].function.name"),
    ({"messages": [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{oops"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": "nobody", "content": "x"}]},
     "messages[1].tool_call_id"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_bad_tools_are_a_400_naming_the_field(server, change, param):
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(**{"messages": ASK, "tools": TOOLS, **GREEDY,
                                                   **change})
    err = e.value.body
    assert e.value.status_code == 400 and err["param"] == param
    assert err["type"] == "invalid_request_error" and err["message"].startswith(param)


def test_a_model_not_trained_on_tools_serves_plain_chats_as_before(server, tiny_model_dir):
    from tunelab.models.runs import load_for_inference
    from tunelab.serve.engine import GenerationEngine

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my parcel?"}]
    r = server.client().chat.completions.create(model="plain", messages=chat, temperature=0,
                                                max_tokens=12)
    loaded = load_for_inference(str(tiny_model_dir))
    engine = GenerationEngine(loaded.model, loaded.tokenizer, loaded.chat_template)
    assert r.usage.prompt_tokens == len(engine.render(chat))
    ids = engine.complete_ids([engine.render(chat)], max_new_tokens=12)[0]
    assert r.choices[0].message.content == loaded.tokenizer.decode(ids, skip_special_tokens=True)
    assert r.choices[0].message.tool_calls is None


def test_the_run_exported_to_gguf_calls_the_same_way(server):
    needs_llamacpp()
    client = server.client()
    ask = {"messages": ASK, "tools": TOOLS, **GREEDY}
    hf = client.chat.completions.create(**ask)
    gguf = client.chat.completions.create(**{**ask, "model": "toolrun-gguf"})
    assert gguf.usage.prompt_tokens == hf.usage.prompt_tokens  # rendered the same way
    assert gguf.choices[0].finish_reason == "tool_calls"
    call = gguf.choices[0].message.tool_calls[0].function
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
