"""`tunelab eval --task tool_call` through the real entry point, with tiny models.

A random tiny model's calls are nonsense, so the first test checks the plumbing (the
metrics, counts and files); the second trains a tiny run on one call until it has
learnt its rows by heart, and checks that the comparison sees the trained run call
correctly where the base model does not: the eval prompt renders the tools as training did.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tunelab.cli import exits
from tunelab.cli.main import main

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
METRICS = {"correct_call_rate", "name_accuracy", "valid_json_rate", "schema_valid_rate",
           "argument_accuracy", "false_call_rate", "missed_call_rate", "accuracy", "per_function"}


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def call_row(question: str, city: str) -> dict:
    return {"tools": [WEATHER], "messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]}]}


def answer_row(question: str, answer: str) -> dict:
    return {"tools": [WEATHER], "messages": [{"role": "user", "content": question},
                                             {"role": "assistant", "content": answer}]}


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_rows():
    return [call_row(f"What is the weather in Paris? ({i})", "Paris") for i in range(4)] + \
        [answer_row(f"Say hello ({i})", "Hello!") for i in range(2)]


def test_tool_call_json_has_the_metrics_and_the_report_the_rows(tmp_path, tiny_model_dir, capsys):
    data = write_rows(tmp_path / "calls.jsonl", eval_rows())
    code = main(["eval", str(tiny_model_dir), "--data", str(data), "--task", "tool_call",
                 "--max-new-tokens", "8", "--json", "--no-progress",
                 "--report", str(tmp_path / "report")])
    assert code == exits.OK
    out = capsys.readouterr().out
    r = last_json(out)
    assert METRICS <= set(r) and r["task"] == "tool_call" and r["rows"] == 6
    assert r["call_rows"] == 4 and r["no_call_rows"] == 2
    for k in ("correct_call_rate", "name_accuracy", "missed_call_rate", "false_call_rate"):
        assert 0 <= r[k] <= 1
    # a model that made no call: the rates of calls made are undefined, not 0
    if r["calls_made"] == 0:
        assert r["valid_json_rate"] is None and r["missed_call_rate"] == 1.0
    assert "tool_call on 6 rows" in out and "correct_call_rate" in out
    preds = [json.loads(x) for x in (tmp_path / "report" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 6
    assert preds[0]["reference"] == '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert preds[0]["expected"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert preds[5]["reference"] == "Hello!" and preds[5]["expected"] == []


@pytest.mark.parametrize("rows, message", [
    ([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]}],
     "no row declares tools"),
    ([call_row("Weather in Oslo?", "Oslo"),
      {"tools": [WEATHER], "messages": [{"role": "user", "content": "anyone there?"}]}],
     "no assistant turn"),  # the reader refuses it, naming the line
])
def test_unusable_rows_are_a_data_error_not_a_traceback(tmp_path, tiny_model_dir, capsys, rows,
                                                        message):
    data = write_rows(tmp_path / "bad.jsonl", rows)
    code = main(["eval", str(tiny_model_dir), "--data", str(data), "--task", "tool_call",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == exits.DATA and message in err and "Traceback" not in err


def test_text_field_is_refused_for_tool_calls(tmp_path, tiny_model_dir, capsys):
    data = write_rows(tmp_path / "calls.jsonl", eval_rows())
    code = main(["eval", str(tiny_model_dir), "--data", str(data), "--task", "tool_call",
                 "--text-field", "question", "--no-progress"])
    assert code == exits.USAGE and "remove --text-field" in capsys.readouterr().err


def test_a_run_trained_on_a_call_makes_it_where_the_base_model_does_not(tmp_path, tiny_model_dir,
                                                                        capsys):
    train = write_rows(tmp_path / "train.jsonl",
                       [call_row(f"What is the weather in Paris? ({i})", "Paris") for i in range(8)])
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(train), "validation": str(train), "max_length": 400},
        "train": {"method": "full", "learning_rate": 1e-2, "batch_size": 8, "max_steps": 60,
                  "eval_every": 0},
        "eval_tasks": [{"task": "tool_call", "data": str(train), "every": 60}],
        "output": {"dir": str(tmp_path / "runs"), "name": "caller"}}))
    assert main(["train", str(cfg), "--no-progress"]) == exits.OK
    inputs = json.loads((tmp_path / "runs" / "caller" / "inputs.json").read_text())
    assert inputs["tool_format"] == "fallback"  # the tiny ChatML template renders no tools
    logged = [json.loads(x) for x in (tmp_path / "runs" / "caller" / "metrics.jsonl")
              .read_text().splitlines()]
    during = [x for x in logged if x["split"] == "eval_tool_call_train"]
    # evaluation during training asks the prompt `tunelab eval` asks the finished run
    assert during[-1]["step"] == 60 and during[-1]["correct_call_rate"] == 1.0
    capsys.readouterr()
    # The training rows themselves: a 2-layer model learns them by heart and no more
    # (held-out prompts are the real-model test's job); a prompt rendered otherwise than
    # in training (no tools, another layout) would not get the learnt call.
    code = main(["eval", str(tiny_model_dir), "--compare", "caller", "--runs-dir",
                 str(tmp_path / "runs"), "--data", str(train), "--task", "tool_call",
                 "--bootstrap", "100", "--json", "--no-progress"])
    assert code == exits.OK
    r = last_json(capsys.readouterr().out)
    base, tuned = r["results"][str(tiny_model_dir)], r["results"]["caller"]
    assert base["correct_call_rate"] == 0.0
    assert tuned["correct_call_rate"] == 1.0 and tuned["schema_valid_rate"] == 1.0
    diff = r["comparison"]["differences"]["caller"]["correct_call_rate"]
    assert diff["diff"] == 1.0 and diff["better"] is True
