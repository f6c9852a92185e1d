"""`tunelab train --nproc 2` on CPU (gloo): the same per-step losses as one process."""

import pytest
import torch
from rundata import config, metrics, summary, tunelab, write_rows, write_yaml
from safetensors.torch import load_file

from tunelab.cli.main import main


def test_two_processes_match_one_process(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "train.jsonl", 37)  # 37 rows, 6 per step: the 7th step has one row
    write_rows(tmp_path / "val.jsonl", 5, "ticket {i}: where is my invoice")
    cfg = config(tmp_path, tiny_model_dir, {"batch_size": 2, "gradient_accumulation_steps": 3,
                                            "max_steps": 8, "eval_every": 3, "save_every": 4})
    cfg["data"] = {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "val.jsonl"),
                   "max_length": 64}
    path = write_yaml(tmp_path / "dp.yaml", cfg)
    assert main(["train", str(path), "--no-progress", "output.name=one"]) == 0
    proc = tunelab("train", str(path), "--no-progress", "--nproc", "2", "output.name=two")
    assert proc.returncode == 0, proc.stderr
    assert "data parallel: 2 processes" in proc.stderr
    one, two = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    a, b = metrics(one, "train"), metrics(two, "train")
    assert [m["step"] for m in a] == [m["step"] for m in b] == list(range(1, 9))
    assert [m["rows_crc32"] for m in a] == [m["rows_crc32"] for m in b]  # same rows, same order
    assert [m["loss_tokens"] for m in a] == [m["loss_tokens"] for m in b]  # the global count
    assert [m["loss"] for m in b] == pytest.approx([m["loss"] for m in a], abs=1e-4)
    va, vb = metrics(one, "validation"), metrics(two, "validation")
    assert [m["loss"] for m in vb] == pytest.approx([m["loss"] for m in va], abs=1e-4)
    wa, wb = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (one, two))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    assert summary(two)["steps"] == 8 and (two / "checkpoints" / "step-00000004").is_dir()
    # only rank 0 wrote: one metrics line per step
    assert len(b) == 8
