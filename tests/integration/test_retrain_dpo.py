"""`tunelab retrain --method dpo` on a tiny run: DPO from the served adapter on exported pairs,
judged on held-out pairs by preference margin (or on the run's supervised rows by loss)."""

from __future__ import annotations

import json

import pytest
import yaml

from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.config.loader import config_from_dict
from tunelab.train.run import run_finetune

QUESTIONS = ["I was charged twice", "the app crashes on start", "my parcel is late",
             "reset my password"]
TEAMS = ["billing", "technical", "shipping", "account"]
SERVE = """\
models: [base]
experiments:
  - name: routing
    variants:
      - {name: control, model: base, weight: 1}
      - {name: other, model: base, weight: 1}
"""


def _prompt(i):
    return f"{QUESTIONS[i % 4]} (ticket {i})"


def write_rows(path, n, offset):
    with open(path, "w") as f:
        for i in range(offset, offset + n):
            f.write(json.dumps({"messages": [{"role": "user", "content": _prompt(i)},
                                             {"role": "assistant", "content": TEAMS[i % 4]}]}) + "\n")
    return path


def write_pairs(path, n, offset, flip=False):
    """Pairs in the shape `tunelab feedback export` writes (OpenAI's DPO lines): the right
    team preferred over the next one, or the other way round (``flip``)."""
    with open(path, "w") as f:
        for i in range(offset, offset + n):
            good, bad = TEAMS[i % 4], TEAMS[(i + 1) % 4]
            if flip:
                good, bad = bad, good
            f.write(json.dumps({
                "input": {"messages": [{"role": "user", "content": _prompt(i)}]},
                "preferred_output": [{"role": "assistant", "content": good}],
                "non_preferred_output": [{"role": "assistant", "content": bad}]}) + "\n")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory, lively_model_dir):
    """A finished tiny LoRA run (supervised), its held-out rows, and pair files."""
    tmp = tmp_path_factory.mktemp("retrain_dpo")
    cfg = config_from_dict({
        "model": {"name": str(lively_model_dir)},
        "data": {"train": str(write_rows(tmp / "train.jsonl", 32, 0)),
                 "validation": str(write_rows(tmp / "heldout.jsonl", 16, 200)),
                 "max_length": 64},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"learning_rate": 2e-2, "batch_size": 4, "max_steps": 8, "save_every": 0,
                  "keep_best": False, "num_threads": 1},
        "output": {"dir": str(tmp / "runs"), "name": "base"}})
    run = run_finetune(cfg)
    write_pairs(tmp / "pairs.jsonl", 24, 100)  # the feedback export's pairs
    write_pairs(tmp / "heldout_pairs.jsonl", 24, 300)
    write_pairs(tmp / "reversed.jsonl", 24, 100, flip=True)  # a planted worse preference
    return run


def retrain(base, *args, capsys):
    code = main(["retrain", "base", "--runs-dir", str(base.parent), "--no-progress",
                 "--method", "dpo", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_dpo_retrain_on_held_out_pairs_is_judged_by_margin_and_promoted(base, tmp_path, capsys):
    tmp = base.parent.parent
    serve = tmp_path / "serve.yaml"
    serve.write_text(SERVE)
    code, out, err = retrain(base, "--data", str(tmp / "pairs.jsonl"), "--eval",
                             str(tmp / "heldout_pairs.jsonl"), "--steps", "6", "--out", "dpo-good",
                             "train.learning_rate=2e-2", "train.dpo.beta=0.5", "--promote",
                             "routing", "--weight", "0.5", "--config", str(serve), capsys=capsys)
    assert code == exits.OK, out + err
    new = base.parent / "dpo-good"
    cfg = yaml.safe_load((new / "config.yaml").read_text())
    assert cfg["train"]["method"] == "dpo" and cfg["train"]["max_steps"] == 6
    assert cfg["model"]["adapter"] == str((base / "adapter").resolve())  # continued, not fresh
    assert cfg["data"]["validation"][0]["path"] == str((tmp / "heldout_pairs.jsonl").resolve())
    assert (new / "reference_logps.json").is_file()
    result = json.loads((new / "retrain.json").read_text())
    assert result["task"] == "preference" and result["primary"] == "margin"
    d = result["difference"]
    print(f"\nDPO retrain on 24 exported pairs, 6 steps: held-out margin {d['a']:.3f} -> "
          f"{d['b']:.3f} nats, difference {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    assert d["ci_low"] > 0 and result["promotable"]  # it learned the preferences, held out
    # DPO's reference is the model as the run starts: the old run's adapter, so the stored
    # reference margins on the held-out pairs are the old run's margins in the comparison
    ref = json.loads((new / "reference_logps.json").read_text())["values"]["validation"]
    assert sum(c - r for c, r in ref) / len(ref) == pytest.approx(d["a"], abs=1e-3)
    inputs = json.loads((new / "inputs.json").read_text())
    assert inputs["adapter"]["path"] == str((base / "adapter").resolve())
    assert result["comparison"]["rows"] == 24
    assert "margin" in out and "accuracy" in out and "promotable: dpo-good is not worse: margin" in out
    assert "note: the new run prefers the chosen answer more than the old run does on" in err
    served = yaml.safe_load(serve.read_text())
    assert [v["name"] for v in served["experiments"][0]["variants"]] == ["control", "other",
                                                                         "dpo-good"]


def test_dpo_retrain_on_reversed_pairs_is_refused(base, capsys):
    tmp = base.parent.parent
    code, out, err = retrain(base, "--data", str(tmp / "reversed.jsonl"), "--eval",
                             str(tmp / "heldout_pairs.jsonl"), "--steps", "6", "--out", "dpo-bad",
                             "train.learning_rate=2e-2", "train.dpo.beta=0.5", capsys=capsys)
    assert code == exits.PROBLEMS, out + err
    result = json.loads((base.parent / "dpo-bad" / "retrain.json").read_text())
    d = result["difference"]
    assert result["worse"] and d["ci_high"] < 0 and result["promoted"] is None
    assert "refused: dpo-bad is worse: the whole interval is on the worse side: margin" in out


def test_dpo_retrain_judged_on_the_runs_supervised_rows(base, capsys):
    # no --eval: the held-out set is the run's validation file (chat rows): the DPO run is
    # judged on those answers' loss, as an sft retrain is, and says it did not judge preferences
    tmp = base.parent.parent
    code, out, err = retrain(base, "--data", str(tmp / "pairs.jsonl"), "--steps", "4",
                             "--out", "dpo-rows", capsys=capsys)
    new = base.parent / "dpo-rows"
    result = json.loads((new / "retrain.json").read_text())
    assert result["task"] == "perplexity" and result["primary"] == "loss"
    assert result["heldout"] == str(tmp / "heldout.jsonl")
    # DPO toward the right teams lowered the held-out answers' loss too (measured: 6.92 -> 5.52)
    assert result["difference"]["ci_high"] < 0 and code == exits.OK and result["promotable"]
    assert "not preference pairs: the DPO run is judged on its answers" in err
    assert yaml.safe_load((new / "config.yaml").read_text())["data"]["validation"] == []


def test_a_held_out_file_mixing_pairs_and_rows_is_refused_before_training(base, tmp_path, capsys):
    tmp = base.parent.parent
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text((tmp / "heldout_pairs.jsonl").read_text() + (tmp / "heldout.jsonl").read_text())
    code, _, err = retrain(base, "--data", str(tmp / "pairs.jsonl"), "--eval", str(mixed),
                           "--out", "mixed", capsys=capsys)
    assert code == exits.DATA and f"{mixed}: 16 error(s)" in err and "nothing was loaded" in err
    assert "Traceback" not in err and not (base.parent / "mixed").exists()
