"""Helpers to run `tunelab train` in a child process on a tiny model and read what it wrote."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from safetensors.torch import load_file

SIGKILLED = -9


def write_data(path: Path, n: int = 40) -> Path:
    teams = ["billing", "technical", "shipping", "account"]
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"ticket number {i}: " + "please help " * (i % 5)},
                {"role": "assistant", "content": teams[i % 4]}]}) + "\n")
    return path


def write_config(tmp: Path, model_dir: Path, name: str = "run", **train) -> Path:
    data = tmp / "train.jsonl"
    if not data.exists():
        write_data(data)
    settings = {"learning_rate": 1e-2, "batch_size": 2, "gradient_accumulation_steps": 2,
                "max_steps": 9, "save_every": 3, "keep_last": None, "eval_every": 0,
                "lr_scheduler": "cosine", "warmup_steps": 2, **train}
    cfg = {"model": {"name": str(model_dir)},
           "data": {"train": str(data), "validation_split": 0.1, "max_length": 64},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.1},  # dropout: the RNG state matters
           "train": settings,
           "output": {"dir": str(tmp / "runs"), "name": name}}
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def child_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    return env


def train(cfg: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunelab", "train", str(cfg), "--no-progress", *args],
                          capture_output=True, text=True, env=env or child_env(), timeout=timeout)


def train_losses(run: Path) -> list[tuple[int, float, int]]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["rows_crc32"]) for r in recs if r["split"] == "train"]


def adapter(run: Path) -> dict:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
