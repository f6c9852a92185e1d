"""Evaluation throughput: batched generation against one-at-a-time ``model.generate``.

    python benchmarks/eval_speed.py                       # 48 SST-2 dev rows, SmolLM2-135M
    python benchmarks/eval_speed.py --rows 96 --batch-size 32 --json

Both sides answer the same classification prompts (the ``tunelab eval`` default prompt)
greedily with the same ``max_new_tokens`` and stop tokens:

* one at a time: ``model.generate`` per prompt, no padding (what a plain loop does);
* batched: ``GenerationEngine.generate`` (length-sorted, continuous batching: a finished
  row takes the next prompt at once; each answer cut at EOS / end-of-turn), as
  ``tunelab eval`` runs it.

Figures are examples per second of wall time and their ratio (target: >= 3x), plus the
share of answers that are identical (greedy decoding of padded batches can differ in
the last bits of float arithmetic, rarely in a token). CPU seconds and the load average
are printed beside them, because on a shared machine the wall clock measures the
neighbours too. The model is loaded and warmed up before timing starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from _requires import CORE, require

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILE = REPO.parent / "shared" / "data" / "sst2" / "dev.tsv"
TARGET = 3.0  # batched examples/s over one-at-a-time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", default=str(DEFAULT_FILE), help="SST-2-style TSV (label, content)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    require(["torch", "tunelab"], CORE)  # no extra: generation runs on the core dependencies
    if not Path(a.file).is_file():
        print(f"{a.file} is absent: pass --file with an SST-2-style TSV", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import GenerationConfig

    from tunelab.data.task import LabelSet, TaskPrompt
    from tunelab.eval.rows import load_rows
    from tunelab.eval.tasks import classify_prompts
    from tunelab.models.runs import load_for_inference
    from tunelab.serve.engine import GenerationEngine

    loaded = load_for_inference(a.model)
    engine = GenerationEngine(loaded.model, loaded.tokenizer, loaded.chat_template)
    rows = load_rows(a.file, "content", "label", a.rows)
    labels = LabelSet.build(["0", "1"], {"0": "negative", "1": "positive"})
    chats = classify_prompts(rows, TaskPrompt("classify", tuple(labels.words)))
    prompts = [engine.render(c) for c in chats]
    config = GenerationConfig(max_new_tokens=a.max_new_tokens, do_sample=False,
                              eos_token_id=sorted(engine.stop_ids), pad_token_id=engine.pad_token_id)
    model, tok = loaded.model, loaded.tokenizer
    model.eval()

    def one_at_a_time() -> list[str]:
        out = []
        with torch.inference_mode():
            for ids in prompts:
                x = torch.tensor([ids])
                y = model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                   generation_config=config)
                new = [t for t in y[0, len(ids):].tolist()]
                cut = next((i for i, t in enumerate(new) if t in engine.stop_ids), len(new))
                out.append(tok.decode(new[:cut], skip_special_tokens=True).strip())
        return out

    def batched() -> list[str]:
        return engine.generate(chats, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)

    engine.generate(chats[:2], max_new_tokens=2, batch_size=2)  # warm-up (allocations, kernels)
    figures = {}
    answers = {}
    for name, fn in (("one_at_a_time", one_at_a_time), ("batched", batched)):
        cpu, start = time.process_time(), time.perf_counter()
        answers[name] = fn()
        wall = time.perf_counter() - start
        figures[name] = {"seconds": round(wall, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
                         "examples_per_second": round(len(chats) / wall, 3)}
    ratio = figures["batched"]["examples_per_second"] / figures["one_at_a_time"]["examples_per_second"]
    same = sum(x == y for x, y in zip(answers["one_at_a_time"], answers["batched"], strict=True))
    result = {"model": a.model, "rows": len(chats), "batch_size": a.batch_size,
              "max_new_tokens": a.max_new_tokens, "torch_threads": torch.get_num_threads(),
              "load_average": [round(x, 2) for x in os.getloadavg()],
              "machine": platform.machine(), **figures, "speedup": round(ratio, 2),
              "identical_answers": same, "target_speedup": TARGET, "meets_target": ratio >= TARGET}
    if a.json:
        print(json.dumps(result))
    else:
        for name in ("one_at_a_time", "batched"):
            f = figures[name]
            print(f"{name:>14}: {f['examples_per_second']:8.2f} examples/s "
                  f"({f['seconds']} s wall, {f['cpu_seconds']} s CPU)")
        print(f"speedup: {ratio:.2f}x (target {TARGET}x); identical answers {same}/{len(chats)}; "
              f"load average {result['load_average']}, {result['torch_threads']} torch threads")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
