"""A real SmolLM2-135M-Instruct run served: the greedy answer equals `tunelab generate`'s.

A short LoRA training (a few steps on the toy chat rows of ../shared/data) makes a run
folder; `tunelab serve RUN` runs as a real process on a free loopback port, and the
official ``openai`` client asks it a prompt at temperature 0. The answer must be the one
`tunelab generate RUN --prompt ...` prints for the same run and prompt: the server
renders the prompt with the same template code and decodes with the same engine.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml
from serve_server import start_server

from shared_data import shared_file
from tunelab.cli.main import main
from tunelab.models.catalog import DEFAULT_MODEL

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPT = "I lost my keys this morning."
MAX_TOKENS = 32


def test_served_real_run_answers_as_generate(tmp_path, capsys, default_model):
    started = time.monotonic()
    rows = shared_file("openai_toy_chat/toy_chat_fine_tuning.jsonl")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": DEFAULT_MODEL},
        "data": {"train": str(rows), "max_length": 128},
        "lora": {"r": 8, "alpha": 16},
        # a high rate, so that three steps move the adapter away from the base's answers
        "train": {"learning_rate": 1e-3, "batch_size": 2, "max_steps": 3,
                  "lr_scheduler": "constant", "eval_at_start": False, "save_every": 0},
        "output": {"dir": str(tmp_path / "runs"), "name": "toy"}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    run = tmp_path / "runs" / "toy"
    inputs = json.loads((run / "inputs.json").read_text())
    assert inputs.get("chat_template_fingerprint")
    trained = time.monotonic()

    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", PROMPT,
                 "--max-new-tokens", str(MAX_TOKENS)]) == 0
    printed = capsys.readouterr().out
    assert printed.endswith("\n") and printed.strip()
    generated = time.monotonic()

    server = start_server(tmp_path / "server", [str(run)])
    try:
        reply = server.client().chat.completions.create(
            model="toy", messages=[{"role": "user", "content": PROMPT}],
            temperature=0, max_tokens=MAX_TOKENS)
    finally:
        code = server.stop()
    served = time.monotonic()
    assert code == 0, server.output()
    answer = reply.choices[0].message.content
    print(f"\nreal SmolLM2 served: train {trained - started:.1f} s, generate "
          f"{generated - trained:.1f} s, serve {served - generated:.1f} s; "
          f"answer {answer!r} ({reply.usage.completion_tokens} tokens, "
          f"{reply.choices[0].finish_reason})")
    assert reply.model == "toy"
    assert 0 < reply.usage.completion_tokens <= MAX_TOKENS
    assert printed == answer + "\n"
