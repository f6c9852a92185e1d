"""A real SmolLM2-135M-Instruct LoRA run exported as GGUF at f32, f16 and q8_0: greedy
answers to its 16 validation prompts compared token for token through transformers' GGUF
reader and through llama.cpp (the ``llamacpp`` extra, which `make test` installs)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from gguf_files import needs_llamacpp
from shared_data import shared_file
from tunelab.cli.main import main
from tunelab.models.catalog import DEFAULT_MODEL

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    from tunelab.models.pull import pull

    pull(DEFAULT_MODEL)
    tmp = tmp_path_factory.mktemp("real-gguf")
    rows = json.loads(shared_file("gsm8k/gsm_8k_train.json").read_text())
    # Rows are read from ../shared at test time into tmp, never copied into the project.
    (tmp / "train.json").write_text(json.dumps(rows[:24]))
    (tmp / "valid.json").write_text(json.dumps(rows[2000:2016]))
    cfg = tmp / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": DEFAULT_MODEL},
        "data": {"train": str(tmp / "train.json"), "validation": str(tmp / "valid.json"),
                 "max_length": 384},
        "lora": {"r": 8, "alpha": 16},
        "train": {"learning_rate": 1e-3, "batch_size": 4, "max_steps": 4, "lr_scheduler": "constant"},
        "output": {"dir": str(tmp / "runs"), "name": "gsm"}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    return tmp / "runs" / "gsm"


def _readers(printed: str) -> dict[str, tuple[int, int, float]]:
    found = {}
    for reader, same, n, diff in re.findall(
            r"passed  (\S+): (\d+)/(\d+) greedy answers identical .*? log-prob difference\| "
            r"(\S+) per token", printed):
        found[reader] = (int(same), int(n), float(diff))
    return found


@pytest.mark.parametrize("ftype", ["f32", "f16", "q8_0"])
def test_the_gguf_answers_like_the_merged_run(tmp_path, real_run, capsys, ftype):
    needs_llamacpp()
    out = tmp_path / f"gsm-{ftype}.gguf"
    assert main(["export", str(real_run), "--gguf", str(out), "--type", ftype]) == 0
    printed = capsys.readouterr().out
    print(f"\nreal SmolLM2 run, {ftype} GGUF ({out.stat().st_size / 1e6:.1f} MB):\n{printed}")
    readers = _readers(printed)
    assert set(readers) == {"transformers", "llama.cpp"}, printed
    for reader, (same, n, diff) in readers.items():
        assert n == 16
        assert same >= (16 if ftype == "f32" else 15), (reader, same)  # 90% of 16 is 14.4
        if ftype == "f32" and reader == "transformers":
            assert diff < 1e-4  # the same weights, read back exactly
