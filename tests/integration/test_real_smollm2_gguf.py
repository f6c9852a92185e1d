"""Real SmolLM2-135M-Instruct LoRA runs exported as GGUF and checked through transformers'
GGUF reader and llama.cpp (the ``llamacpp`` extra, which `make test` installs):

* an SST-2 sentiment classifier (a task run: the short answers most fine-tunes give) at
  f32, f16 and q8_0: 16 validation prompts, each within the export's thresholds;
* a GSM8K run (long free-form answers, 48 greedy tokens) at f32: all 16 identical. At f16
  and q8_0 such long answers drift past the 90% threshold (README, "Export and deploy"),
  and the export refuses them; that is the check working, so it is not asserted here.
"""

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


def _train(tmp, name: str, data: dict, task: dict | None, steps: int, lr: float):
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": DEFAULT_MODEL}, **({"task": task} if task else {}),
        "data": {**data, "max_length": 384},
        "lora": {"r": 8, "alpha": 16},
        "train": {"learning_rate": lr, "batch_size": 8, "max_steps": steps,
                  "lr_scheduler": "constant", "eval_every": 0, "save_every": 0},
        "output": {"dir": str(tmp / "runs"), "name": name}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    return tmp / "runs" / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tunelab.models.pull import pull

    needs_llamacpp()
    pull(DEFAULT_MODEL)
    tmp = tmp_path_factory.mktemp("real-gguf")
    # Rows are read from ../shared at test time into tmp, never copied into the project.
    sst = shared_file("sst2/train.tsv").read_text(encoding="utf-8").splitlines()
    dev = shared_file("sst2/dev.tsv").read_text(encoding="utf-8").splitlines()
    (tmp / "sst-train.tsv").write_text("\n".join(sst[:161]) + "\n", encoding="utf-8")
    (tmp / "sst-dev.tsv").write_text("\n".join(dev[:17]) + "\n", encoding="utf-8")
    gsm = json.loads(shared_file("gsm8k/gsm_8k_train.json").read_text())
    (tmp / "gsm-train.json").write_text(json.dumps(gsm[:24]))
    (tmp / "gsm-valid.json").write_text(json.dumps(gsm[2000:2016]))
    sentiment = _train(tmp, "sst2", {"train": str(tmp / "sst-train.tsv"),
                                     # dev.tsv names its text column `content`
                                     "validation": [{"path": str(tmp / "sst-dev.tsv"),
                                                     "text_field": "content"}]},
                       {"type": "classify", "text_field": "sentence",
                        "labels": {"0": "negative", "1": "positive"}}, steps=20, lr=1e-3)
    maths = _train(tmp, "gsm", {"train": str(tmp / "gsm-train.json"),
                                "validation": str(tmp / "gsm-valid.json")}, None, steps=4, lr=1e-3)
    return {"sst2": sentiment, "gsm": maths}


def _readers(printed: str) -> dict[str, tuple[int, int, float]]:
    found = {}
    for reader, same, n, diff in re.findall(
            r"passed  (\S+): (\d+)/(\d+) greedy answers identical .*?log-prob difference\| "
            r"(\S+) per token", printed):
        found[reader] = (int(same), int(n), float(diff))
    return found


@pytest.mark.parametrize(("run", "ftype"), [("sst2", "f32"), ("sst2", "f16"), ("sst2", "q8_0"),
                                            ("gsm", "f32")])
def test_the_gguf_answers_like_the_merged_run(tmp_path, runs, capsys, run, ftype):
    out = tmp_path / f"{run}-{ftype}.gguf"
    assert main(["export", str(runs[run]), "--gguf", str(out), "--type", ftype]) == 0
    printed = capsys.readouterr().out
    print(f"\nreal SmolLM2 {run} run, {ftype} GGUF ({out.stat().st_size / 1e6:.1f} MB):\n{printed}")
    readers = _readers(printed)
    assert set(readers) == {"transformers", "llama.cpp"}, printed
    for reader, (same, n, diff) in readers.items():
        assert n == 16
        assert same >= (16 if ftype == "f32" else 15), (reader, same)  # 90% of 16 is 14.4
        if ftype == "f32":  # the same weights: only summation order differs
            assert diff < (1e-6 if reader == "transformers" else 1e-3), (reader, diff)
