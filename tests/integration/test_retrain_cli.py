"""`tunelab retrain` on a tiny run: continue, judge on the held-out set, refuse or promote."""

from __future__ import annotations

import json

import pytest
import yaml

from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.config.loader import config_from_dict
from tunelab.train.run import run_finetune

TEAMS = ["billing", "technical", "shipping", "account"]
SERVE = """\
models: [base]
experiments:
  - name: routing
    variants:
      - {name: control, model: base, weight: 1}
      - {name: other, model: base, weight: 1}
"""


def write_rows(path, n, offset=0, answer=None):
    with open(path, "w") as f:
        for i in range(offset, offset + n):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"ticket {i}: please help" + " now" * (i % 3)},
                {"role": "assistant", "content": answer or TEAMS[i % 4]}]}) + "\n")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory, lively_model_dir):
    """A finished tiny LoRA run whose validation file is the held-out set."""
    tmp = tmp_path_factory.mktemp("retrain")
    cfg = config_from_dict({
        "model": {"name": str(lively_model_dir)},
        "data": {"train": str(write_rows(tmp / "train.jsonl", 32)),
                 "validation": str(write_rows(tmp / "heldout.jsonl", 16, offset=200)),
                 "max_length": 64},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"learning_rate": 2e-2, "batch_size": 4, "max_steps": 16, "save_every": 0,
                  "keep_best": False, "num_threads": 1},
        "output": {"dir": str(tmp / "runs"), "name": "base"}})
    run = run_finetune(cfg)
    write_rows(tmp / "feedback.jsonl", 16, offset=100)
    # feedback that contradicts every held-out answer: not one team, always the same word
    write_rows(tmp / "contradicting.jsonl", 16, offset=100, answer="the quick brown fox")
    return run


@pytest.fixture
def serve_yaml(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(SERVE)
    return path


def retrain(base, *args, capsys) -> tuple[int, str, str]:
    code = main(["retrain", "base", "--runs-dir", str(base.parent), "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_better_run_is_promoted_as_a_canary(base, serve_yaml, capsys):
    code, out, err = retrain(base, "--data", str(base.parent.parent / "feedback.jsonl"),
                             "--steps", "4", "--out", "good", "--promote", "routing",
                             "--weight", "0.2", "--config", str(serve_yaml), capsys=capsys)
    assert code == exits.OK, out + err
    new = base.parent / "good"
    result = json.loads((new / "retrain.json").read_text())
    assert result["task"] == "perplexity" and result["primary"] == "loss"
    assert result["promotable"] and result["difference"]["b"] < result["difference"]["a"]
    cfg = yaml.safe_load((new / "config.yaml").read_text())
    assert cfg["model"]["adapter"] == str((base / "adapter").resolve())
    assert cfg["data"]["validation"][0]["path"] == str(base.parent.parent / "heldout.jsonl")
    assert cfg["train"]["max_steps"] == 4 and cfg["train"]["method"] == "lora"
    served = yaml.safe_load(serve_yaml.read_text())
    assert served["models"] == ["base", str(new.resolve())]
    assert served["experiments"][0]["variants"] == [
        {"name": "control", "model": "base", "weight": 0.4},
        {"name": "other", "model": "base", "weight": 0.4},
        {"name": "good", "model": "good", "weight": 0.2}]
    assert "promotable: good is not worse: loss" in out and "restart the server" in out
    assert "paired bootstrap 95% CI" in out


def test_a_destroyed_run_is_refused_and_not_promoted(base, serve_yaml, capsys):
    # rows that answer every ticket with the same non-team text: a planted worse run
    code, out, err = retrain(base, "--data", str(base.parent.parent / "contradicting.jsonl"),
                             "--steps", "12", "--out", "wrecked", "train.learning_rate=5e-2",
                             "--promote", "routing", "--weight", "0.1", "--config",
                             str(serve_yaml), capsys=capsys)
    assert code == exits.PROBLEMS, out + err
    assert "refused: wrecked is worse: the whole interval is on the worse side" in out
    result = json.loads((base.parent / "wrecked" / "retrain.json").read_text())
    assert result["worse"] and result["difference"]["ci_low"] > 0 and result["promoted"] is None
    assert serve_yaml.read_text() == SERVE and "unchanged" in out


def test_bad_input_is_refused_before_training(base, serve_yaml, tmp_path, capsys):
    feedback = str(base.parent.parent / "feedback.jsonl")
    code, _, err = main(["retrain", "nope", "--data", feedback]), *capsys.readouterr()
    assert code == exits.STORE and "no run 'nope'" in err
    code, _, err = retrain(base, "--data", str(tmp_path / "none.jsonl"), capsys=capsys)
    assert code == exits.DATA and "missing" in err
    code, _, err = retrain(base, "--data", feedback, "--out", "x", "--promote", "ab",
                           "--weight", "0.1", "--config", str(serve_yaml), capsys=capsys)
    assert code == exits.USAGE and "no experiment 'ab' (experiments there: routing)" in err
    code, _, err = retrain(base, "--data", feedback, "--promote", "routing", capsys=capsys)
    assert code == exits.USAGE and "--weight W and --config FILE together" in err
    gated = tmp_path / "export"
    gated.mkdir()
    write_rows(gated / "sft.jsonl", 12)
    (gated / "gate.json").write_text(json.dumps({"ok": False, "files": [
        {"path": str(gated / "sft.jsonl"), "ok": False, "errors": 1}]}))
    code, _, err = retrain(base, "--data", str(gated / "sft.jsonl"), capsys=capsys)
    assert code == exits.DATA and "the data gate failed" in err
    assert not (base.parent / "x").exists()  # nothing was trained
    assert "Traceback" not in err
