"""DPO on real SmolLM2-135M-Instruct with a few hundred HH-RLHF pairs: the held-out margin rises."""

import json

import pytest

from shared_data import shared_file
from tunelab.cli.main import main
from tunelab.config import load_config
from tunelab.config.loader import dump_config
from tunelab.data.load import load_pairs
from tunelab.models.runs import load_for_inference
from tunelab.train.preference import preference_margin

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
EXAMPLE = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "dpo_hh_rlhf.yaml"


def test_real_model_dpo_raises_the_held_out_margin(tmp_path, default_model):
    src = shared_file("hh_rlhf_harmless_base/test.jsonl")  # read in place, never copied
    cfg = load_config(EXAMPLE, [f"data.train={src}", "data.train_rows=240", "data.validation_split=0.02",
                                "data.max_length=128", "train.max_steps=10", "train.eval_every=0",
                                "train.warmup_steps=1", "train.batch_size=4", "train.learning_rate=1e-3",
                                f"output.dir={tmp_path / 'runs'}",
                                "output.name=dpo"])
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    assert main(["train", str(path), "--no-progress"]) == 0
    run = tmp_path / "runs" / "dpo"
    summary = json.loads((run / "summary.json").read_text())
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
           if json.loads(x)["split"] == "validation"]
    start, end = val[0], val[-1]
    print(f"\nreal SmolLM2 DPO on {summary['train_rows']} HH-RLHF pairs, {summary['steps']} steps: "
          f"held-out ({end['pairs']:.0f} pairs) reward margin {start['reward_margin']:.4f} -> "
          f"{end['reward_margin']:.4f}, accuracy {start['reward_accuracy']:.3f} -> "
          f"{end['reward_accuracy']:.3f}, loss {start['loss']:.4f} -> {end['loss']:.4f}; "
          f"{summary['wall_seconds']}s")
    assert start["reward_margin"] == pytest.approx(0.0, abs=1e-3)  # the policy starts as the reference
    assert end["reward_margin"] > 0.02 and end["loss"] < start["loss"]
    # the public margin function agrees on some held-out pairs (adapter off = the reference)
    loaded = load_for_inference(str(run))
    held = [e for e in load_pairs(src) if e.line > 2250][:16]
    margin = preference_margin(loaded.model, loaded.tokenizer, held, batch_size=8,
                               chat_template=loaded.chat_template, max_length=128)
    print(f"preference_margin on {margin.pairs} pairs: {margin.margin:.3f} nats")
    assert margin.pairs > 0
