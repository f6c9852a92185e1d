"""`tunelab train` through the real entry point on a tiny random model."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tunelab.cli import exits
from tunelab.cli.main import main

TICKETS = [("I was charged twice", "billing"), ("the app crashes on start", "technical"),
           ("my parcel is late", "shipping"), ("reset my password", "account")]


def write_chat(path, n=24):
    with open(path, "w") as f:
        for i in range(n):
            q, a = TICKETS[i % 4]
            f.write(json.dumps({"messages": [{"role": "system", "content": "route it"},
                                             {"role": "user", "content": f"{q} ({i})"},
                                             {"role": "assistant", "content": a}]}) + "\n")
    return path


def write_config(tmp_path, model_dir, **train):
    data = write_chat(tmp_path / "train.jsonl")
    cfg = {"model": {"name": str(model_dir)},
           "data": {"train": str(data), "validation_split": 0.25, "max_length": 64},
           "train": {"learning_rate": 5e-3, "batch_size": 4, "max_steps": 6, "eval_every": 3,
                     "lr_scheduler": "cosine", "warmup_steps": 1, **train},
           "output": {"dir": str(tmp_path / "runs"), "name": "r1"}}
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_lora_run_writes_a_complete_run_folder(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, method="lora")
    assert main(["train", str(cfg), "--no-progress", "lora.r=4"]) == 0
    run = tmp_path / "runs" / "r1"
    for f in ["config.yaml", "inputs.json", "metrics.jsonl", "summary.json",
              "adapter/adapter_model.safetensors", "adapter/adapter_config.json",
              "tokenizer/tokenizer.json"]:
        assert (run / f).is_file(), f
    assert list((run / "tb").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["steps"] == 6
    assert summary["train_rows"] == 18 and summary["validation_rows"] == 6
    inputs = json.loads((run / "inputs.json").read_text())
    assert len(inputs["files"][0]["sha256"]) == 64
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["lora"]["r"] == 4 and resolved["train"]["weight_decay"] == 0.0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert {x["step"] for x in lines if x["split"] == "validation"} == {0, 3, 6}
    # LoRA B starts at zero: a trained adapter has moved it
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    b = [v for k, v in adapter.items() if "lora_B" in k]
    assert b and all(v.abs().sum() > 0 for v in b)


def test_freeze_trains_last_block_only(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, method="freeze", max_steps=3, eval_every=0)
    assert main(["train", str(cfg), "--no-progress", "freeze.last_k_blocks=1"]) == 0
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(tmp_path / "runs" / "r1" / "model" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers.1." in k for k in changed)
    assert any(".layers.1." in k for k in changed)
    assert all(torch.equal(before[k], after[k]) for k in before if ".layers.0." in k or "embed" in k)


def test_invalid_config_exit_2_names_both_problems(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir)
    proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(cfg),
                           "train.learning_rate=fast", "train.lr_scheduler=sideways"],
                          capture_output=True, text=True)
    assert proc.returncode == exits.USAGE
    assert "train.learning_rate" in proc.stderr and "train.lr_scheduler" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_model_names_the_pull_command(tmp_path, capsys):
    data = write_chat(tmp_path / "t.jsonl")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"train": str(data)},
                                   "output": {"dir": str(tmp_path / "runs")}}))
    assert main(["train", str(cfg), "--no-progress"]) == exits.MODEL
    err = capsys.readouterr().err
    assert "tunelab models pull smollm2-135m-instruct" in err and "Traceback" not in err


def test_bad_rows_stop_the_run_before_training(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir)
    with open(tmp_path / "train.jsonl", "a") as f:
        f.write('{"messages": [{"role": "bot", "content": "x"}]}\n{not json\n')
    assert main(["train", str(cfg), "--no-progress"]) == exits.DATA
    err = capsys.readouterr().err
    assert "train.jsonl:25" in err and "train.jsonl:26" in err
    assert not (tmp_path / "runs" / "r1" / "summary.json").exists()


def test_pickle_model_is_refused(tmp_path, tiny_model_dir, capsys):
    import shutil

    from tiny import make_tiny_model, make_tiny_tokenizer

    bad = tmp_path / "pickle-model"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "model.safetensors").unlink()
    tok = make_tiny_tokenizer()
    torch.save(make_tiny_model(tok).state_dict(), bad / "pytorch_model.bin")
    cfg = write_config(tmp_path, bad)
    assert main(["train", str(cfg), "--no-progress"]) == exits.MODEL
    assert "pickle" in capsys.readouterr().err.lower()


@pytest.mark.parametrize("cmd", [["runs", "list"], ["runs", "show", "r1"]])
def test_runs_commands(tmp_path, tiny_model_dir, capsys, cmd):
    cfg = write_config(tmp_path, tiny_model_dir, max_steps=2, eval_every=0)
    assert main(["train", str(cfg), "--no-progress"]) == 0
    capsys.readouterr()
    assert main([*cmd, "--dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "r1" in out


def test_train_shows_each_phase_on_stderr_only(tmp_path, tiny_model_dir):
    from train_runs import child_env
    from train_runs import write_config as write_run_config

    cfg = write_run_config(tmp_path, tiny_model_dir, max_steps=4, save_every=0, eval_every=2)
    run = [sys.executable, "-m", "tunelab", "train", str(cfg)]
    proc = subprocess.run(run, capture_output=True, text=True, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    phases = ["reading data", "read 40 rows: 36 for training, 4 for validation", "loading model",
              "tokenize: 100%", "40/40", "validate (start): 100%", "train: 100%", "4/4",
              "validate:", "ETA"]
    assert [p for p in phases if p not in proc.stderr] == []
    assert [p for p in ["reading", "loading", "tokenize", "validate", "train:", "ETA", "%|"]
            if p in proc.stdout] == []
    assert proc.stdout.startswith("run: ")
    quiet = subprocess.run([*run, "--no-progress", "output.name=quiet"], capture_output=True,
                           text=True, env=child_env(), timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "reading data" in quiet.stderr and "loading model" in quiet.stderr
    assert "%|" not in quiet.stderr and "ETA" not in quiet.stderr  # no bars
