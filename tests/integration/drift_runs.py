"""A tiny sentiment classifier run trained on real SST-2 rows, and production prompts for the
drift tests: rows drawn from its own training file, or questions from GSM8K."""

from __future__ import annotations

import csv
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from tunelab.cli.main import main
from tunelab.db import RequestLogWriter, RequestRecord, open_database

WORDS = {"0": "negative", "1": "positive"}
TRAIN_ROWS = 1500  # rows of SST-2's train.tsv the run trains on


def write_sst2_subset(source: Path, out: Path, n: int = TRAIN_ROWS) -> Path:
    """The first ``n`` rows of SST-2's train.tsv (header kept), as the run's training file."""
    with open(source, encoding="utf-8") as f:
        lines = [next(f) for _ in range(n + 1)]
    out.write_text("".join(lines), encoding="utf-8")
    return out


def train_sst2_run(tmp: Path, model_dir: Path, train_file: Path, name: str = "sst2-run") -> Path:
    """A two-step LoRA classify run on ``train_file`` (the drift tests need its data, not skill)."""
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(model_dir)},
        "task": {"type": "classify", "text_field": "sentence", "labels": WORDS},
        "data": {"train": str(train_file), "validation_split": 0.05, "max_length": 512},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"learning_rate": 1e-2, "batch_size": 4, "max_steps": 2, "eval_every": 0,
                  "save_every": 0, "num_threads": 1},
        "output": {"dir": str(tmp / "runs"), "name": name}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    return tmp / "runs" / name


def sst2_prompts(train_file: Path, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (sentence, label word) pairs drawn from the training file itself."""
    with open(train_file, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [(r["sentence"], WORDS[r["label"]]) for r in random.Random(seed).sample(rows, n)]


def gsm8k_prompts(gsm8k_file: Path, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` GSM8K questions, each answered with a label word at random."""
    rows = json.loads(gsm8k_file.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    return [(r["instruction"], rng.choice(list(WORDS.values()))) for r in rng.sample(rows, n)]


def log_prompts(db_url: str, model: str, prompts: list[tuple[str, str]],
                start: datetime | None = None) -> None:
    """Write answered chat requests to the request log, one a minute back from now."""
    start = start or datetime.now(timezone.utc) - timedelta(minutes=len(prompts) + 1)
    db = open_database(db_url)
    writer = RequestLogWriter(db)
    writer.start()
    try:
        for i, (text, answer) in enumerate(prompts):
            writer.write(RequestRecord(
                request_id=f"chatcmpl-{model}-{i:06d}", created_at=start + timedelta(minutes=i),
                endpoint="chat.completions", model=model, user=None,
                prompt=json.dumps([{"role": "user", "content": text}]), answer=answer,
                prompt_tokens=len(text) // 4, completion_tokens=1, latency_ms=20.0 + i % 7,
                time_to_first_token_ms=5.0, finish_reason="stop", status_code=200, stream=False,
                filtered=None))
    finally:
        writer.close()
        db.close()
