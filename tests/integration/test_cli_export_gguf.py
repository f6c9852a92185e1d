"""`tunelab export --gguf` through the CLI on tiny models: a trained run and a store model
are written, checked and handed off; bad input gets a clear error and leaves no file."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tunelab.cli.main import main

PROMPTS = ["I was charged twice", "the app crashes", "my parcel is late", "reset my password",
           "where is my refund"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny LoRA run trained until its answers are confident (a task run: classify)."""
    from tiny import save_tiny_model_dir

    tmp = tmp_path_factory.mktemp("gguf-run")
    base = save_tiny_model_dir(tmp / "base")
    rows = [{"text": f"{p} {i}", "label": ["billing", "technical"][i % 2]}
            for i, p in enumerate(PROMPTS * 6)]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (tmp / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(base)},
        "task": {"type": "classify", "labels": ["billing", "technical"]},
        "data": {"train": str(tmp / "train.jsonl"), "validation": str(tmp / "valid.jsonl")},
        "lora": {"r": 4, "alpha": 8},
        "train": {"learning_rate": 5e-2, "batch_size": 4, "max_steps": 16},
        "output": {"dir": str(tmp / "runs"), "name": "run"}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    return tmp / "runs" / "run"


def _fields(path: Path) -> dict:
    from gguf import GGUFReader

    return {k: f.contents() for k, f in GGUFReader(str(path)).fields.items()
            if not k.startswith("GGUF.")}


@pytest.mark.parametrize("ftype", ["f32", "q8_0"])
def test_a_run_exports_and_its_answers_agree(tmp_path, trained_run, capsys, ftype):
    out = tmp_path / f"ticket-{ftype}.gguf"
    assert main(["export", str(trained_run), "--gguf", str(out), "--type", ftype]) == 0
    printed = capsys.readouterr().out
    assert "passed  transformers: 6/6 greedy answers identical" in printed  # its 6 validation rows
    assert "ollama create ticket-" in printed and f"llama-server -m {out}" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, f"ticket-{ftype}.Modelfile"])
    f = _fields(out)
    from tunelab.models.runs import load_for_inference, task_of_run

    loaded = load_for_inference(str(trained_run))
    assert f["tokenizer.chat_template"] == loaded.tokenizer.chat_template
    assert f["tokenizer.ggml.eos_token_id"] == loaded.tokenizer.eos_token_id
    assert json.loads(f["tunelab.task"]) == task_of_run(trained_run).model_dump(mode="json")
    modelfile = (tmp_path / f"ticket-{ftype}.Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{out.name}\nTEMPLATE ")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "SYSTEM \"\"\"Classify the text the user sends." in modelfile  # the task's system turn


def test_a_store_model_exports_the_same_way(tmp_path, tiny_model_dir, capsys):
    assert main(["models", "import", str(tiny_model_dir), "--name", "tiny-store"]) == 0
    out = tmp_path / "tiny.gguf"
    assert main(["export", "tiny-store", "--gguf", str(out), "--check-prompts", "4"]) == 0
    printed = capsys.readouterr().out
    assert "passed  transformers: 4/4 greedy answers identical" in printed
    assert json.loads(json.dumps(_fields(out)["tunelab.source"])) == "tiny-store"


def test_a_chaotic_model_fails_the_q8_0_check_and_leaves_nothing(tmp_path, lively_model_dir, capsys):
    # Random weights drawn wide: every logit is a near tie, so rounding to 8 bits changes
    # the greedy path; the check must catch it rather than ship the file.
    out = tmp_path / "chaos.gguf"
    code = main(["export", str(lively_model_dir), "--gguf", str(out), "--type", "q8_0"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "does not answer like the model it came from" in err and "needs 90% for q8_0" in err
    assert "--no-check" in err
    assert list(tmp_path.iterdir()) == []
    assert main(["export", str(lively_model_dir), "--gguf", str(out), "--type", "q8_0",
                 "--no-check"]) == 0
    assert "not checked  --no-check" in capsys.readouterr().out
    assert out.is_file()


def test_bad_input_is_named_and_leaves_no_file(tmp_path, trained_run, capsys):
    missing = tmp_path / "no-such-folder" / "x.gguf"
    assert main(["export", str(trained_run), "--gguf", str(missing)]) == 5
    assert "no-such-folder does not exist" in capsys.readouterr().err

    hollow = tmp_path / "runs" / "hollow"  # finished, but its weights were deleted
    hollow.mkdir(parents=True)
    for f in ("summary.json", "config.yaml", "inputs.json"):
        (hollow / f).write_bytes((trained_run / f).read_bytes())
    shutil.copytree(trained_run / "tokenizer", hollow / "tokenizer")
    out = tmp_path / "h.gguf"
    assert main(["export", str(hollow), "--gguf", str(out)]) == 5
    assert "neither adapter/ nor model/" in capsys.readouterr().err

    (tmp_path / "taken.gguf").write_text("keep me")
    assert main(["export", str(trained_run), "--gguf", str(tmp_path / "taken.gguf")]) == 5
    assert "exists already" in capsys.readouterr().err
    assert (tmp_path / "taken.gguf").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "taken.gguf"]


def test_an_unsupported_architecture_is_refused(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tiny import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    src = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2)).save_pretrained(src)
    tok.save_pretrained(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["export", str(src), "--gguf", str(out_dir / "g.gguf")]) == 4
    err = capsys.readouterr().err
    assert "GGUF export supports LlamaForCausalLM" in err and "GPT2LMHeadModel" in err
    assert list(out_dir.iterdir()) == []


def _small_file_limit() -> None:
    # A disk that fills after 60 kB: writes past it fail with EFBIG instead of a signal.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))


def test_a_full_disk_is_a_clear_error_with_no_partial_file(tmp_path, lively_model_dir):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "tunelab", "export", str(lively_model_dir),
                           "--gguf", str(out_dir / "m.gguf"), "--no-check"],
                          capture_output=True, text=True, timeout=300, env=env,
                          preexec_fn=_small_file_limit)
    assert proc.returncode == 5, proc.stderr
    assert "cannot be written" in proc.stderr and "room" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(out_dir.iterdir()) == []
    assert torch.tensor(1).item() == 1  # the parent process is unaffected
