"""A few real training steps of SmolLM2-135M-Instruct on GSM8K rows: validation loss falls."""

import json

import pytest
import yaml

from shared_data import shared_file
from tunelab.cli.main import main
from tunelab.models.catalog import DEFAULT_MODEL

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def test_real_model_validation_loss_falls(tmp_path, monkeypatch, default_model):
    src = shared_file("gsm8k/gsm_8k_train.json")
    rows = json.loads(src.read_text())
    # Rows are read from ../shared at test time into tmp, never copied into the project.
    (tmp_path / "train.json").write_text(json.dumps(rows[:32]))
    (tmp_path / "valid.json").write_text(json.dumps(rows[1000:1008]))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": DEFAULT_MODEL},
        "data": {"train": str(tmp_path / "train.json"), "validation": str(tmp_path / "valid.json"),
                 "max_length": 512},
        "lora": {"r": 16, "alpha": 32},
        "train": {"learning_rate": 1e-3, "batch_size": 4, "max_steps": 6, "lr_scheduler": "constant"},
        "output": {"dir": str(tmp_path / "runs"), "name": "gsm"}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "runs" / "gsm" / "summary.json").read_text())
    print(f"\nreal SmolLM2 on GSM8K: val loss {summary['initial_val_loss']:.4f} -> "
          f"{summary['final_val_loss']:.4f} in {summary['steps']} steps, "
          f"{summary['tokens_per_second']} tokens/s")
    assert summary["steps"] == 6
    assert summary["final_val_loss"] < summary["initial_val_loss"] - 0.02
