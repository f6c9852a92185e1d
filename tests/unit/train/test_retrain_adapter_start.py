"""`model.adapter`: a run that starts from a trained LoRA adapter instead of a fresh one."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tunelab.config.loader import config_from_dict
from tunelab.errors import ConfigError
from tunelab.models import adapters
from tunelab.train.run import apply_method, load_base, run_finetune

TEAMS = ["billing", "technical", "shipping", "account"]


def _rows(path, n, offset=0):
    with open(path, "w") as f:
        for i in range(offset, offset + n):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"ticket {i}: please help" + " now" * (i % 3)},
                {"role": "assistant", "content": TEAMS[i % 4]}]}) + "\n")
    return path


def _cfg(tmp_path, model_dir, name, **model):
    return config_from_dict({
        "model": {"name": str(model_dir), **model},
        "data": {"train": str(_rows(tmp_path / f"{name}.jsonl", 16, offset=len(name))),
                 "validation": str(tmp_path / "heldout.jsonl"), "max_length": 64},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"learning_rate": 1e-2, "batch_size": 4, "max_steps": 3, "save_every": 0,
                  "keep_best": False, "num_threads": 1},
        "output": {"dir": str(tmp_path / "runs"), "name": name}})


@pytest.fixture
def first_run(tmp_path, tiny_model_dir):
    _rows(tmp_path / "heldout.jsonl", 8, offset=100)
    return run_finetune(_cfg(tmp_path, tiny_model_dir, "first"))


def test_step_zero_weights_are_the_old_adapter_and_they_train(first_run, tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir, "second", adapter=str(first_run))
    base = load_base(cfg)
    model = apply_method(base.model, cfg, base.new_token_ids)
    saved = load_file(str(first_run / "adapter" / "adapter_model.safetensors"))
    live = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(live) == len(saved) > 0
    for name, tensor in saved.items():
        # PEFT saves without the adapter name: ...lora_A.weight is ...lora_A.default.weight live
        key = name.replace("lora_A.weight", "lora_A.default.weight").replace(
            "lora_B.weight", "lora_B.default.weight")
        assert torch.equal(live[key].detach(), tensor), name
        assert live[key].requires_grad
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    # a fresh adapter (no model.adapter) starts with B = 0, so it differs from the saved one
    fresh = apply_method(load_base(cfg).model, _cfg(tmp_path, tiny_model_dir, "third"), [])
    assert not torch.equal(dict(fresh.named_parameters())[key].detach(), saved[name])


def test_a_continued_run_starts_where_the_old_one_ended(first_run, tmp_path, tiny_model_dir):
    second = run_finetune(_cfg(tmp_path, tiny_model_dir, "second", adapter=str(first_run)))
    old = json.loads((first_run / "summary.json").read_text())
    new = json.loads((second / "summary.json").read_text())
    # the same held-out file, scored before the first step: the old adapter's final loss
    assert new["initial_val_loss"] == pytest.approx(old["final_val_loss"], abs=1e-6)
    assert new["initial_val_loss"] < old["initial_val_loss"]  # not a fresh adapter's
    inputs = json.loads((second / "inputs.json").read_text())
    assert inputs["adapter"]["path"] == str(first_run / "adapter")
    assert len(inputs["adapter"]["sha256"]) == 1


def test_adapter_needs_a_lora_method_and_an_adapter_folder(tmp_path, tiny_model_dir):
    _rows(tmp_path / "heldout.jsonl", 8)
    with pytest.raises(ConfigError, match="model.adapter continues a LoRA adapter"):
        config_from_dict({"model": {"name": str(tiny_model_dir), "adapter": str(tmp_path)},
                          "data": {"train": str(tmp_path / "heldout.jsonl")},
                          "train": {"method": "full"}})
    with pytest.raises(ConfigError, match="neither a run folder with adapter/"):
        adapters.adapter_folder(tmp_path)
