"""Phased runs: weights handed on in memory, each phase recorded, resume at the phase."""

import json

import pytest
import torch
from rundata import child_env, config, metrics, summary, tunelab, write_rows, write_yaml
from safetensors.torch import load_file

from tunelab.cli.main import main


def phased(tmp_path, model_dir, second: dict, name="ph", **train):
    """Phase 1 on ticket data, phase 2 on parcel data; both validate on phase 1's data."""
    write_rows(tmp_path / "one.jsonl", 32)
    write_rows(tmp_path / "val_one.jsonl", 8, "ticket {i}: where is my invoice")
    write_rows(tmp_path / "two.jsonl", 24, "my parcel {i} is late, where is it")
    cfg = config(tmp_path, model_dir, {"max_steps": 3, "eval_every": 0, "keep_best": False, **train},
                 phases=[{"name": "general"}, {"name": "domain", **second}])
    cfg["data"] = {"train": str(tmp_path / "one.jsonl"), "validation": str(tmp_path / "val_one.jsonl"),
                   "max_length": 64}
    cfg["output"]["name"] = name
    return write_yaml(tmp_path / f"{name}.yaml", cfg)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_two_phases_hand_the_weights_on(tmp_path, tiny_model_dir, method):
    second = {"data": {"train": str(tmp_path / "two.jsonl")},
              "train": {"method": method, "learning_rate": 2e-3, "max_steps": 2}}
    assert main(["train", str(phased(tmp_path, tiny_model_dir, second)), "--no-progress"]) == 0
    run = tmp_path / "runs" / "ph"
    one, two = summary(run / "phases" / "phase-1"), summary(run / "phases" / "phase-2")
    # phase 2 starts where phase 1 ended: its loss on phase 1's data is phase 1's final loss
    assert two["initial_val_loss"] == pytest.approx(one["final_val_loss"], abs=1e-5)
    assert one["final_val_loss"] < one["initial_val_loss"]  # phase 1 did change the weights
    assert two["train_rows"] == 24 and one["train_rows"] == 32  # each phase its own data
    for p in ("phase-1", "phase-2"):
        assert len(metrics(run / "phases" / p, "train")) > 0
        assert (run / "phases" / p / "config.yaml").is_file()
    top = summary(run)
    assert top["status"] == "complete" and top["steps"] == 5 and len(top["phases"]) == 2
    assert top["final_val_loss"] == two["final_val_loss"]
    records = json.loads((run / "phases.json").read_text())["phases"]
    assert [r["method"] for r in records] == ["lora", method]
    # LoRA -> LoRA (same settings) keeps one adapter over the base; LoRA -> full merges it
    assert (run / ("adapter" if method == "lora" else "model")).is_dir()
    if method == "lora":
        assert "continues" in records[1]["handoff"]
    else:
        assert "merged" in records[1]["handoff"]


def test_a_killed_phased_run_resumes_at_its_phase(tmp_path, tiny_model_dir):
    second = {"data": {"train": str(tmp_path / "two.jsonl")},
              "train": {"method": "full", "learning_rate": 2e-3, "max_steps": 3, "save_every": 1}}
    ref_cfg = phased(tmp_path, tiny_model_dir, second, name="ref")
    proc = tunelab("train", str(ref_cfg), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    cfg = phased(tmp_path, tiny_model_dir, second, name="cut")
    # phase 1 saves no checkpoint (save_every 0): step 1 with a checkpoint is phase 2's
    killed = tunelab("train", str(cfg), "--no-progress", env=child_env(TUNELAB_FAILPOINT="after_rename@1"))
    assert killed.returncode == -9, killed.stderr
    run = tmp_path / "runs" / "cut"
    assert (run / "phases" / "phase-1" / "summary.json").is_file()
    assert not (run / "phases" / "phase-2" / "summary.json").exists()
    resumed = tunelab("train", str(cfg), "--no-progress", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "phase(s) 1-1 finished; they are skipped" in resumed.stderr
    assert "resuming phase-2 from step-00000001" in resumed.stderr
    ref = tmp_path / "runs" / "ref"
    for p in ("phase-1", "phase-2"):
        got = [(m["step"], m["loss"]) for m in metrics(run / "phases" / p, "train")]
        want = [(m["step"], m["loss"]) for m in metrics(ref / "phases" / p, "train")]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [x for _, x in got] == pytest.approx([x for _, x in want], abs=1e-6)
    a, b = load_file(ref / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
