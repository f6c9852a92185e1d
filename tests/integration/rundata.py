"""Small chat data sets, tiny-model configs and a child-process runner for CLI tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from train_runs import child_env

TEAMS = ["billing", "technical", "shipping", "account"]


def write_rows(path: Path, n: int, text: str = "ticket {i}: please help") -> Path:
    """``n`` chat rows routing a ticket to one of four teams."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": text.format(i=i) + " now" * (i % 4)},
                {"role": "assistant", "content": TEAMS[i % 4]}]}) + "\n")
    return path


def config(tmp: Path, model_dir: Path, train: dict | None = None, **sections) -> dict:
    """A tiny LoRA config (no dropout: runs are comparable step by step)."""
    data = tmp / "train.jsonl"
    if not data.exists():
        write_rows(data, 32)
    return {"model": {"name": str(model_dir)},
            "data": {"train": str(data), "validation_split": 0.2, "max_length": 64},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "train": {"learning_rate": 1e-2, "batch_size": 4, "max_steps": 4, "eval_every": 2,
                      "save_every": 0, "num_threads": 1, **(train or {})},
            "output": {"dir": str(tmp / "runs")}, **sections}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def tunelab(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`tunelab ARGS` in a child process."""
    return subprocess.run([sys.executable, "-m", "tunelab", *args], capture_output=True, text=True,
                          env=env or child_env(), timeout=timeout)


def metrics(run: Path, split: str) -> list[dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["split"] == split]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def study_trials(folder: Path, name: str) -> list:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}").get_trials()
