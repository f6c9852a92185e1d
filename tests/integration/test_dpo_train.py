"""`tunelab train` with `train.method: dpo` on a tiny model: what it writes, what it moves,
and an exact resume after a kill (the guarantees of supervised runs)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from train_runs import SIGKILLED, adapter, child_env, train, train_losses

QUESTIONS = ["I was charged twice", "the app crashes on start", "my parcel is late",
             "reset my password"]
TEAMS = ["billing", "technical", "shipping", "account"]


def write_pairs(path, n=40):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"{QUESTIONS[i % 4]} ({i})", "chosen": TEAMS[i % 4],
                                "rejected": TEAMS[(i + 1) % 4]}) + "\n")
    return path


def write_dpo_config(tmp, model_dir, name="run", **train_settings):
    data = write_pairs(tmp / "pairs.jsonl")
    settings = {"method": "dpo", "learning_rate": 1e-2, "batch_size": 2,
                "gradient_accumulation_steps": 2, "max_steps": 9, "save_every": 3,
                "keep_last": None, "eval_every": 3, "lr_scheduler": "cosine", "warmup_steps": 2,
                "dpo": {"beta": 0.2}, **train_settings}
    cfg = {"model": {"name": str(model_dir)},
           "data": {"train": str(data), "validation_split": 0.2, "max_length": 64},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.1},  # dropout: the RNG state matters
           "train": settings, "output": {"dir": str(tmp / "runs"), "name": name}}
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """The uninterrupted DPO run every other run must equal."""
    tmp = tmp_path_factory.mktemp("dpo_ref")
    proc = train(write_dpo_config(tmp, tiny_model_dir))
    assert proc.returncode == 0, proc.stderr
    return tmp / "runs" / "run"


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_dpo_run_raises_the_margin_and_moves_only_the_adapter(reference, tiny_model_dir):
    run = reference
    for f in ("summary.json", "reference_logps.json", "adapter/adapter_model.safetensors",
              "tokenizer/tokenizer.json", "config.yaml"):
        assert (run / f).is_file(), f
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "dpo" and summary["artifact"] == "adapter"
    assert summary["steps"] == 9 and summary["train_rows"] == 32
    assert summary["first_step_loss"] == pytest.approx(0.693147, abs=1e-4)  # policy == reference
    val = [r for r in _records(run) if r["split"] == "validation"]
    assert [r["step"] for r in val] == [0, 3, 6, 9]
    assert val[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert val[-1]["reward_margin"] > 0.05 and val[-1]["loss"] < val[0]["loss"]
    assert summary["preference"]["final_validation"]["reward_margin"] > 0.05
    train_rec = [r for r in _records(run) if r["split"] == "train"]
    assert all({"pairs", "rewards_chosen", "rewards_rejected", "reward_accuracy"} <= set(r)
               for r in train_rec)
    ref = json.loads((run / "reference_logps.json").read_text())
    assert len(ref["values"]["train"]) == 32 and len(ref["values"]["validation"]) == 8
    # the adapter moved (B starts at 0); the base weights are untouched (a LoRA run)
    b = [v for k, v in adapter(run).items() if "lora_B" in k]
    assert b and all(v.abs().sum() > 0 for v in b)
    assert not (run / "model").exists()


def test_dpo_kill_then_resume_equals_the_uninterrupted_run(reference, tmp_path, tiny_model_dir):
    cfg = write_dpo_config(tmp_path, tiny_model_dir)
    killed = train(cfg, env=child_env(TUNELAB_FAILPOINT="after_rename@6"))
    assert killed.returncode == SIGKILLED, killed.stderr
    run = tmp_path / "runs" / "run"
    stored = (run / "reference_logps.json").read_bytes()
    resumed = train(cfg, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "from step-00000006" in resumed.stderr and "reference log-probs: read from" in resumed.stderr
    assert (run / "reference_logps.json").read_bytes() == stored  # read back, not recomputed
    assert train_losses(run) == train_losses(reference)
    want, got = adapter(reference), adapter(run)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_dpo_on_chat_rows_is_refused_before_the_model_loads(tmp_path, tiny_model_dir):
    cfg = write_dpo_config(tmp_path, tiny_model_dir)
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n")
    data = yaml.safe_load(cfg.read_text())
    data["data"]["train"] = str(chat)
    cfg.write_text(yaml.safe_dump(data))
    proc = train(cfg)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "trains on preference pairs" in proc.stderr and "at line(s) 1" in proc.stderr
    assert "loading model" not in proc.stderr


def test_dpo_with_a_task_is_a_config_error(tmp_path, tiny_model_dir):
    cfg = write_dpo_config(tmp_path, tiny_model_dir)
    proc = train(cfg, "task.type=classify")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train.method dpo trains on preference pairs" in proc.stderr


def test_base_weights_stay_frozen(reference, tiny_model_dir):
    # the saved adapter holds LoRA tensors only: nothing of the base model was trained
    keys = load_file(reference / "adapter" / "adapter_model.safetensors").keys()
    assert keys and all("lora_" in k for k in keys)
