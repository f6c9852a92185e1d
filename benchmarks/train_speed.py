"""Training speed against TRL's SFTTrainer, on the same CPU, data and settings, in one run.

    python benchmarks/train_speed.py --rows 256            # tunelab, then TRL tuned and pack
    python benchmarks/train_speed.py --rows 64 --peers none  # tunelab only (quick check)

What runs, one after the other, each in its own process (so each peak RSS is its own):

1. the CPU's fp32 matmul peak: the best of the median GFLOP/s of square ``torch.mm``
   calls (1024 to 4096, two seconds each), measured before and after tunelab trains;
   the higher of the two is the peak;
2. ``tunelab train`` on SmolLM2-135M-Instruct (the model store's copy): the first N rows
   of ``../shared/data/gsm8k/gsm_8k_train.json`` as user/assistant chats, one epoch,
   LoRA r=16 alpha=32 dropout 0 on all linear layers, lr 2e-4 (linear decay, no warmup,
   as TRL's default), 8 rows per step, seed 0, no validation during training;
3. ``../shared/baselines/trl_sft.py`` unchanged, in modes ``tuned`` and ``pack``, through
   a small runner that keeps the trained adapter after the script has finished (the
   script does not save it; its settings and its timing are untouched);
4. every adapter's loss on the same 64 held-out rows (rows N..N+63 of the file, which no
   run trained on), computed by one function for all three.

Figures: ``tokens_per_second`` is the tokens of the training rows (no padding) over the
seconds of the training loop, as the TRL script computes it (its ``trainer.train()``;
tunelab's loop time from ``summary.json``). ``peak_rss_mb`` is the process's maximum
resident memory (``wait4``). ``train_loss`` is the mean of the per-step losses; note that
tunelab trains on the answer tokens only and TRL's script on every token, so the two train
losses are not the same quantity. ``val_loss`` is the mean cross-entropy per answer token
(the assistant's reply and its end-of-turn token) on the held-out rows;
``val_loss_all_tokens`` is the same over every token after the first, TRL's objective.

MFU (model FLOPs utilization) = the FLOPs the training needed / train seconds / peak.
The count, per training token: frozen linear layers 4 x (sum of in x out over the
decoder's linears) (forward, and the input gradient; no weight gradient), LoRA
6 x r x (sum of in + out) (forward; both gradients); per answer token, the LM head
4 x hidden x vocab (tunelab runs the head only where a label is); per row of L tokens and
per layer, causal attention 6 x heads x head_dim x L(L+1) (QK^T and AV over the L(L+1)/2
causal pairs, forward and twice that backward). Norms, activations and the optimizer are
not counted. ``mfu.convention_4n`` gives the issue's rough count, 4 x parameters per token.

The last line printed is one JSON object with the keys ``tunelab``, ``trl_tuned``,
``trl_pack``, ``ratios``, ``mfu``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _requires import BENCH, CORE, require

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_DATA = SHARED / "data" / "gsm8k" / "gsm_8k_train.json"
PEER = SHARED / "baselines" / "trl_sft.py"
VAL_ROWS = 64
TARGETS = {"vs_trl_tuned": 3.0, "vs_trl_pack": 2.5, "memory_vs_trl_tuned": 0.40,
           "val_loss_worse_than_trl_tuned": 0.02, "mfu": 0.70}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data

def to_chat(r: dict) -> dict:
    """A row as the peer script turns it into a chat (same user text, same answer)."""
    user = r["instruction"] + (("\n\n" + r["input"]) if r.get("input") else "")
    answer = r.get("output", r.get("response"))
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def tokenize_row(tok, row: dict):
    """The row as tunelab tokenizes a chat: prompt masked, answer and end-of-turn labelled."""
    from tunelab.data.example import Example, Message
    from tunelab.data.template import tokenize_example

    m = to_chat(row)["messages"]
    return tokenize_example(tok, Example([Message(x["role"], x["content"]) for x in m]))


def write_jsonl(rows: list[dict], path: Path) -> Path:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(to_chat(r)) + "\n")
    return path


# ---------------------------------------------------------------- peak

def matmul_peak(seconds_each: float = 2.0) -> float:
    """The CPU's sustained fp32 matmul GFLOP/s, with torch's default threads.

    For each square size (1024 to 4096) the matmul runs for ``seconds_each`` and the
    median rate of its calls is kept; the peak is the best of those medians. (The
    median, not the fastest call: single calls on a shared machine scatter by +-20%.)
    """
    import statistics

    import torch

    best = 0.0
    for n in (1024, 2048, 3072, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b  # warm up
        rates = []
        t_end = time.perf_counter() + seconds_each
        while time.perf_counter() < t_end or len(rates) < 3:
            t = time.perf_counter()
            a @ b
            rates.append(2 * n ** 3 / (time.perf_counter() - t) / 1e9)
        best = max(best, statistics.median(rates))
    return best


# ---------------------------------------------------------------- children

def run_child(cmd: list[str], env: dict | None = None, log: Path | None = None) -> tuple[str, float]:
    """Run ``cmd``; returns its stdout and its own peak RSS in MB (from wait4)."""
    out_f = open(log, "w+") if log else tempfile.TemporaryFile("w+")
    with out_f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out_f, text=True, env=env)
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out_f.seek(0)
            tail = out_f.read()[-3000:]
            raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{tail}")
    return stdout, usage.ru_maxrss / 1024


def child_env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def run_tunelab(model_dir: Path, train_file: Path, work: Path) -> dict:
    import yaml

    cfg = {
        "model": {"name": str(model_dir)},
        "data": {"train": str(train_file), "max_length": 1024},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"learning_rate": 2e-4, "batch_size": 8, "epochs": 1, "lr_scheduler": "linear",
                  "warmup_steps": 0, "max_grad_norm": 1.0, "weight_decay": 0.0, "seed": 0,
                  "eval_at_start": False, "save_every": 0, "log_every": 1},
        "output": {"dir": str(work / "runs"), "name": "tunelab"},
    }
    path = work / "tunelab.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _, rss = run_child([sys.executable, "-m", "tunelab", "train", str(path), "--no-progress"],
                       env=child_env(), log=work / "tunelab.log")
    run = work / "runs" / "tunelab"
    summary = json.loads((run / "summary.json").read_text())
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if r.get("split") == "train"]
    return {"tokens": summary["train_tokens"], "train_seconds": summary["train_seconds"],
            "tokens_per_second": round(summary["train_tokens"] / summary["train_seconds"], 1),
            "peak_rss_mb": round(rss), "train_loss": round(sum(losses) / len(losses), 4),
            "steps": summary["steps"], "adapter": str(run / "adapter")}


def run_trl(model_dir: Path, data: Path, rows: int, mode: str, work: Path) -> dict:
    save = work / f"trl_{mode}_adapter"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-trl", str(save), "--",
           str(PEER), "--model", str(model_dir), "--data", str(data), "--n", str(rows), "--mode", mode]
    stdout, rss = run_child(cmd, env=child_env(), log=work / f"trl_{mode}.log")
    line = [x for x in stdout.splitlines() if x.startswith("{")][-1]
    peer = json.loads(line)
    return {"tokens": peer["tokens"], "train_seconds": peer["train_seconds"],
            "tokens_per_second": peer["tokens_per_second"], "peak_rss_mb": round(rss),
            "peak_rss_mb_reported": peer["peak_rss_mb"], "train_loss": peer["train_loss"],
            "adapter": str(save)}


def trl_worker(save: str, script_argv: list[str]) -> None:
    """Run the peer script as ``__main__``, then save the adapter its trainer trained."""
    import runpy

    import trl

    trainers = []
    original_init = trl.SFTTrainer.__init__

    def init(self, *a, **kw):
        original_init(self, *a, **kw)
        trainers.append(self)

    trl.SFTTrainer.__init__ = init
    sys.argv = script_argv
    runpy.run_path(script_argv[0], run_name="__main__")
    sys.stdout.flush()
    trainers[-1].save_model(save)


# ---------------------------------------------------------------- evaluation

def held_out_losses(model_dir: Path, adapters: dict[str, str], val_rows: list[dict]) -> dict:
    """Answer-token and all-token loss of each adapter on the held-out rows."""
    import torch
    from peft import PeftModel

    from tunelab.eval.callables import token_nll
    from tunelab.models.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir)
    answer_rows, all_rows = [], []
    for r in val_rows:
        t = tokenize_row(tok, r)
        answer_rows.append(t)
        all_rows.append(type(t)(list(t.input_ids), list(t.input_ids)))
    out = {}
    for name, path in adapters.items():
        torch.manual_seed(0)
        model = PeftModel.from_pretrained(load_causal_lm(model_dir), path)
        res = {}
        for key, rows in (("val_loss", answer_rows), ("val_loss_all_tokens", all_rows)):
            per_row = token_nll(model, rows, tok.pad_token_id, batch_size=16)
            res[key] = round(sum(s for s, _ in per_row) / sum(n for _, n in per_row), 4)
        out[name] = res
        del model
    return out


# ---------------------------------------------------------------- FLOPs

def flop_count(model_dir: Path, train_rows: list[dict]) -> dict:
    """The training FLOPs of one epoch over ``train_rows`` (see the module docstring)."""
    from tunelab.models.loading import load_tokenizer

    cfg = json.loads((model_dir / "config.json").read_text())
    d, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or d // heads
    vocab = cfg["vocab_size"]
    shapes = [(d, heads * hd), (d, kv * hd), (d, kv * hd), (heads * hd, d), (d, inter), (d, inter), (inter, d)]
    lin = layers * sum(i * o for i, o in shapes)  # decoder linear weights
    lora_io = layers * sum(i + o for i, o in shapes)
    r = 16
    tok = load_tokenizer(model_dir)
    tokens = answers = attn_pairs = 0
    for row in train_rows:
        t = tokenize_row(tok, row)
        n = len(t)
        tokens += n
        answers += sum(1 for x in t.labels[1:] if x != -100)
        attn_pairs += n * (n + 1)
    linear = 4 * lin * tokens
    lora = 6 * r * lora_io * tokens
    head = 4 * d * vocab * answers
    attention = 6 * heads * hd * attn_pairs * layers
    params = lin + vocab * d + (0 if cfg.get("tie_word_embeddings", True) else vocab * d) + d * (2 * layers + 1)
    return {"tokens": tokens, "answer_tokens": answers, "linear": linear, "lora": lora, "head": head,
            "attention": attention, "total": linear + lora + head + attention,
            "params": params, "convention_4n": 4 * params * tokens}


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker-trl":
        trl_worker(argv[1], argv[3:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=256, help="training rows (the first N of the file)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Alpaca-shaped JSON array (gsm8k)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="store name or model folder")
    p.add_argument("--peers", default="tuned,pack", help="TRL modes to run, comma-separated, or 'none'")
    p.add_argument("--work", default=None, help="folder for run files (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the result object to this file")
    args = p.parse_args(argv)
    peers = [] if args.peers == "none" else [m.strip() for m in args.peers.split(",") if m.strip()]
    require(["torch", "tunelab"], CORE)
    if peers:  # the TRL peers run in child processes, late: check before any work
        require(["trl", "datasets"], BENCH)

    from tunelab.models.resolve import resolve_model

    model_dir = resolve_model(args.model)
    data_path = Path(args.data)
    all_rows = json.loads(data_path.read_text())
    if len(all_rows) < args.rows + VAL_ROWS:
        raise SystemExit(f"{data_path} has {len(all_rows)} rows; --rows {args.rows} needs "
                         f"{args.rows + VAL_ROWS} (the held-out {VAL_ROWS} come after them)")
    train_rows, val_rows = all_rows[:args.rows], all_rows[args.rows:args.rows + VAL_ROWS]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="train_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    train_file = write_jsonl(train_rows, work / "train.jsonl")
    say(f"work folder: {work}; model {model_dir}; {len(train_rows)} training rows, {len(val_rows)} held out")

    peak_before = matmul_peak()
    say(f"fp32 matmul peak: {peak_before:.1f} GFLOP/s")
    say("tunelab: training ...")
    results = {"tunelab": run_tunelab(model_dir, train_file, work)}
    say(f"tunelab: {results['tunelab']['tokens_per_second']} tokens/s")
    peak_after = matmul_peak()
    say(f"fp32 matmul peak after: {peak_after:.1f} GFLOP/s")
    for mode in peers:
        say(f"trl {mode}: training ...")
        results[f"trl_{mode}"] = run_trl(model_dir, data_path, args.rows, mode, work)
        say(f"trl {mode}: {results[f'trl_{mode}']['tokens_per_second']} tokens/s")

    say("held-out losses ...")
    losses = held_out_losses(model_dir, {k: v["adapter"] for k, v in results.items()}, val_rows)
    for k in results:
        results[k].update(losses[k])

    peak = max(peak_before, peak_after)
    flops = flop_count(model_dir, train_rows)
    t = results["tunelab"]
    mfu = {
        "value": round(flops["total"] / t["train_seconds"] / (peak * 1e9), 4),
        "achieved_gflops": round(flops["total"] / t["train_seconds"] / 1e9, 1),
        "peak_gflops": round(peak, 1),
        "peak_gflops_before_after": [round(peak_before, 1), round(peak_after, 1)],
        "flops": {k: flops[k] for k in ("linear", "lora", "head", "attention", "total")},
        "convention_4n": round(flops["convention_4n"] / t["train_seconds"] / (peak * 1e9), 4),
        "how": "FLOPs needed / tunelab train seconds / best fp32 matmul GFLOP/s of this CPU; "
               "see benchmarks/train_speed.py's docstring for the count",
    }
    ratios = {}
    if "trl_tuned" in results:
        tt = results["trl_tuned"]
        ratios["vs_trl_tuned"] = round(t["tokens_per_second"] / tt["tokens_per_second"], 2)
        ratios["memory_vs_trl_tuned"] = round(t["peak_rss_mb"] / tt["peak_rss_mb"], 3)
        ratios["val_loss_vs_trl_tuned"] = round(t["val_loss"] / tt["val_loss"] - 1, 4)
    if "trl_pack" in results:
        ratios["vs_trl_pack"] = round(t["tokens_per_second"] / results["trl_pack"]["tokens_per_second"], 2)
    for v in results.values():
        v.pop("adapter", None)
    out = {**results, "ratios": ratios, "mfu": mfu, "targets": TARGETS, "rows": args.rows,
           "val_rows": VAL_ROWS, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}

    rows = [("", "tokens/s", "peak MB", "train loss", "val loss", "val loss (all tok)")]
    for k, v in results.items():
        rows.append((k, v["tokens_per_second"], v["peak_rss_mb"], v["train_loss"], v["val_loss"],
                     v["val_loss_all_tokens"]))
    for r in rows:
        say("  ".join(f"{x!s:>18}" for x in r))
    say(f"ratios: {ratios}")
    say(f"MFU {mfu['value']:.1%} ({mfu['achieved_gflops']} of {mfu['peak_gflops']} GFLOP/s); "
        f"4N convention {mfu['convention_4n']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
