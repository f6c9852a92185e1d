"""generate / export through the CLI: the merged model answers exactly like the adapter."""

import json

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.cli.main import main
from tunelab.models.runs import load_for_inference
from tunelab.serve.engine import GenerationEngine

PROMPTS = ["I was charged twice", "the app crashes", "my parcel is late", "reset my password",
           "where is my refund"]


def _train(tmp_path, model_dir):
    rows = [{"messages": [{"role": "user", "content": f"{p} {i}"},
                          {"role": "assistant", "content": ["billing", "technical"][i % 2]}]}
            for i, p in enumerate(PROMPTS * 4)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(model_dir)}, "data": {"train": str(data)},
        "lora": {"r": 4, "alpha": 8},
        "train": {"learning_rate": 2e-2, "batch_size": 4, "max_steps": 8},
        "output": {"dir": str(tmp_path / "runs"), "name": "run"}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    return tmp_path / "runs" / "run"


def test_export_merge_matches_adapter_and_generate_prints(tmp_path, tiny_model_dir, capsys):
    run = _train(tmp_path, tiny_model_dir)
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    loaded = load_for_inference(str(run))
    with_adapter = GenerationEngine(loaded.model, loaded.tokenizer).generate(convs, max_new_tokens=8)

    out = tmp_path / "merged"
    assert main(["export", str(run), "--merge", str(out)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)  # plain transformers
    tok = AutoTokenizer.from_pretrained(out)
    assert not any(p.endswith(".bin") for p in map(str, out.iterdir()))
    merged_out = GenerationEngine(merged, tok).generate(convs, max_new_tokens=8)
    assert merged_out == with_adapter
    # the adapter really changed the model: the base model answers differently somewhere
    base = load_for_inference(str(tiny_model_dir))
    base_out = GenerationEngine(base.model, base.tokenizer).generate(convs, max_new_tokens=8)
    assert base_out != with_adapter

    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1],
                 "--max-new-tokens", "8"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == with_adapter[:2]
