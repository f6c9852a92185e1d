"""A tiny-model training run on tool-call rows: the loss mask covers the calls and the
answers and no tool-result token (checked token by token), the run records how it
rendered tools, and training, evaluation and serving render identical prompt ids.

The same checks run on a chat template that renders tools itself (transformers'
``tools=``), at the tokenizer level, so both tool formats are covered.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tiny import CHATML_TEMPLATE
from tunelab.cli.main import main
from tunelab.data.example import Example, Message, ToolCall
from tunelab.data.load import load_examples
from tunelab.data.template import (
    IGNORE_INDEX,
    render_prompt_ids,
    resolve_tool_format,
    tokenize_example,
)
from tunelab.data.tool_text import call_json
from tunelab.eval.callables import load_callables
from tunelab.models.runs import load_for_inference, run_tool_format
from tunelab.serve.engine import GenerationEngine

TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Find a parcel.",
    "parameters": {"type": "object", "properties": {"code": {"type": "string"}},
                   "required": ["code"]}}}]
# A template that renders declarations and calls itself: the "template" tool format.
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<call>{{ c.function | tojson }}</call>"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _row(i: int) -> dict:
    return {"tools": TOOLS, "messages": [
        {"role": "user", "content": f"Where is parcel {i}?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"c{i}", "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"code": f"P{i}"})}}]},
        {"role": "tool", "tool_call_id": f"c{i}", "content": f"RESULT {i}: at the depot"},
        {"role": "assistant", "content": f"Parcel {i} waits at the depot."}]}


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("tools")
    data = tmp / "tools.jsonl"
    data.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(24)), encoding="utf-8")
    cfg = tmp / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(data), "max_length": 512},
        "lora": {"r": 4, "alpha": 8},
        "train": {"learning_rate": 1e-2, "batch_size": 4, "max_steps": 4, "eval_every": 0,
                  "save_every": 0, "lr_scheduler": "constant"},
        "output": {"dir": str(tmp / "runs"), "name": "tools"}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    return tmp / "runs" / "tools", data


def _spans(tok, ex: Example, template: str | None, fmt: str | None) -> set[int]:
    """Positions that must be trained: each assistant turn's text through its end of turn,
    measured from the prompt ids generation would start from."""
    trained: set[int] = set()
    msgs = ex.messages
    for i, m in enumerate(msgs):
        if m.role != "assistant":
            continue
        start = len(render_prompt_ids(tok, msgs[:i], template, ex.tools, fmt))
        ids = render_prompt_ids(tok, msgs[: i + 1] + [Message("user", "next")], template,
                                ex.tools, fmt)
        end = ids.index(tok.convert_tokens_to_ids("<|im_end|>"), start)  # the turn's end
        trained |= set(range(start, end + 1))
    return trained


def _check_mask(tok, ex: Example, template: str | None, fmt: str | None) -> None:
    row = tokenize_example(tok, ex, template, fmt)
    want = _spans(tok, ex, template, fmt)
    for k, (i, label) in enumerate(zip(row.input_ids, row.labels, strict=True)):
        assert (label != IGNORE_INDEX) == (k in want), (k, tok.decode([i]))
        if label != IGNORE_INDEX:
            assert label == i
    trained = tok.decode([i for i, lab in zip(row.input_ids, row.labels, strict=True)
                          if lab != IGNORE_INDEX])
    untrained = tok.decode([i for i, lab in zip(row.input_ids, row.labels, strict=True)
                            if lab == IGNORE_INDEX])
    assert "RESULT" not in trained and "RESULT" in untrained  # no tool-result token is trained
    assert "lookup" in trained and "waits at the depot." in trained
    # Every prompt a model is asked during training is what generation renders.
    for i, m in enumerate(ex.messages):
        if m.role == "assistant":
            prompt = render_prompt_ids(tok, ex.messages[:i], template, ex.tools, fmt)
            assert row.input_ids[: len(prompt)] == prompt


def test_the_run_records_its_tool_format_and_masks_only_calls_and_answers(tool_run):
    run, data = tool_run
    assert run_tool_format(run) == "fallback"  # the tiny ChatML template ignores tools=
    loaded = load_for_inference(str(run))
    assert loaded.tool_format == "fallback"
    ex = load_examples(data)[0]
    _check_mask(loaded.tokenizer, ex, loaded.chat_template, loaded.tool_format)
    row = tokenize_example(loaded.tokenizer, ex, loaded.chat_template, loaded.tool_format)
    text = loaded.tokenizer.decode([i for i, lab in zip(row.input_ids, row.labels, strict=True)
                                    if lab != IGNORE_INDEX])
    call = call_json(ToolCall("lookup", {"code": "P0"}))
    assert text == f"{call}<|im_end|>Parcel 0 waits at the depot.<|im_end|>"


def test_train_eval_and_serve_render_identical_ids(tool_run):
    run, data = tool_run
    ex = load_examples(data)[3]
    loaded = load_for_inference(str(run))
    prompt = ex.messages[:1]  # the user's question: the model must call
    train_row = tokenize_example(loaded.tokenizer, ex, loaded.chat_template, loaded.tool_format)
    engine = GenerationEngine(loaded.model, loaded.tokenizer, loaded.chat_template,
                              loaded.tool_format)
    eval_ids = engine.render(prompt, ex.tools)
    assert train_row.input_ids[: len(eval_ids)] == eval_ids
    assert train_row.labels[len(eval_ids) - 1] == IGNORE_INDEX
    assert train_row.labels[len(eval_ids)] != IGNORE_INDEX  # the call starts right after
    # Evaluation's callables answer with tools through the same engine settings.
    model = load_callables(str(run), str(run.parent), max_new_tokens=4, batch_size=2)
    assert len(model.predict([prompt], tools=[ex.tools])) == 1


def test_a_template_that_renders_tools_is_used_and_masked_the_same(tiny_tokenizer):
    assert resolve_tool_format(tiny_tokenizer, CHATML_TEMPLATE, None) == "fallback"
    assert resolve_tool_format(tiny_tokenizer, TOOLS_TEMPLATE, None) == "template"
    from tunelab.data.formats import to_example

    ex, findings = to_example(_row(5), "chat", "t.jsonl", 1)
    assert ex is not None and not findings
    _check_mask(tiny_tokenizer, ex, TOOLS_TEMPLATE, None)
    text = tiny_tokenizer.decode(tokenize_example(tiny_tokenizer, ex, TOOLS_TEMPLATE).input_ids)
    assert 'Tools: [{"type": "function"' in text and "<call>" in text  # the template's own layout
    assert "You can call these functions" not in text  # not the fallback's


def test_the_fallback_can_be_forced_and_template_refused_where_unsupported(tiny_tokenizer):
    from tunelab.errors import DataError

    assert resolve_tool_format(tiny_tokenizer, TOOLS_TEMPLATE, "fallback") == "fallback"
    with pytest.raises(DataError, match="does not render tools"):
        resolve_tool_format(tiny_tokenizer, CHATML_TEMPLATE, "template")
    ex = Example(messages=[Message("user", "hi"), Message("assistant", "hello")])
    # Rows without tools render exactly as before, whatever the tool format.
    assert tokenize_example(tiny_tokenizer, ex, TOOLS_TEMPLATE, "fallback").input_ids == \
        tokenize_example(tiny_tokenizer, ex, TOOLS_TEMPLATE, "template").input_ids
