"""examples/feedback_loop/ stays runnable without the real model: its configs validate and
fit each other, its data script makes what the configs and users.py read from the real
SST-2 files, run.sh parses, and users.py's rating rule is the one the README describes.

The loop itself, on the real model, is run by hand (`bash examples/feedback_loop/run.sh`,
829 s measured on 2 busy cores); the same loop on a tiny model is
tests/integration/test_feedback_loop.py.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from example_files import EXAMPLES_DIR, SERVE, prepared
from shared_data import SHARED_DATA
from tunelab.config import load_config
from tunelab.config.serve import load_serve_settings

LOOP = EXAMPLES_DIR / "feedback_loop"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"loop_{name}", LOOP / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_sh_parses_and_is_strict():
    text = (LOOP / "run.sh").read_text(encoding="utf-8")
    assert "set -euo pipefail" in text and "${TUNELAB:-tunelab}" in text
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash here")
    done = subprocess.run([bash, "-n", str(LOOP / "run.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_serve_config_serves_the_run_the_train_config_makes():
    train = load_config(LOOP / "train.yaml")
    serve = load_serve_settings(LOOP / "serve.yaml")
    assert LOOP / "serve.yaml" in SERVE  # sorted as a serve config, not loaded as a run config
    assert train.task is None  # `tunelab retrain` continues chat runs, not task runs
    assert train.output.name in serve.models and serve.log_text
    (experiment,) = serve.experiments
    variants = {v.name: v for v in experiment.variants}
    assert variants["tuned"].model == train.output.name
    assert serve.aliases[variants["base"].model] == train.model.name
    assert experiment.control_variant == "base"
    assert variants["tuned"].weight == variants["base"].weight


def test_make_data_writes_what_train_yaml_and_users_read(tmp_path):
    config = prepared(LOOP / "train.yaml", tmp_path)  # skips where ../shared/data is absent
    cfg = load_config(config)
    data = tmp_path / "data"
    train = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
    heldout = [json.loads(x) for x in (data / "heldout.jsonl").read_text().splitlines()]
    production = [json.loads(x) for x in (data / "production.jsonl").read_text().splitlines()]
    assert [s.path for s in cfg.data.train] == [str(data / "train.jsonl")]
    assert [s.path for s in cfg.data.validation] == [str(data / "heldout.jsonl")]
    assert (len(train), len(heldout), len(production)) == (400, 100, 1821)
    for rows in (train, heldout):
        answers = [r["messages"][1]["content"] for r in rows]
        assert answers.count("positive") == answers.count("negative") == len(rows) // 2
        assert all(r["messages"][0]["content"].endswith("\nPositive or negative?") for r in rows)
    # test.tsv's labels are real here (GLUE's test.tsv has none): both labels, about half each
    labels = [r["label"] for r in production]
    assert 0.4 < labels.count("positive") / len(labels) < 0.6
    # the three sets do not share a review, so neither leakage nor a repeat muddles the loop
    asked = {r["review"] for r in production}
    trained = {r["messages"][0]["content"].rsplit("\n", 1)[0] for r in train + heldout}
    assert len(asked) > 1800 and len(asked & trained) <= 2
    if (SHARED_DATA / "gsm8k").is_dir():
        offtopic = (data / "offtopic.jsonl").read_text().splitlines()
        assert len(offtopic) == 60


def test_make_data_refuses_unlabelled_test_rows(tmp_path):
    make_data = _module("make_data")
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    (sst2 / "train.tsv").write_text("label\tsentence\n0\tdull , dull , dull .\n")
    (sst2 / "dev.tsv").write_text("label\tcontent\n1\ta joy .\n")
    (sst2 / "test.tsv").write_text("index\tsentence\n0\tno labels here .\n")  # GLUE's shape
    with pytest.raises(make_data.DataError, match="columns"):
        make_data.build(tmp_path)
    (sst2 / "test.tsv").write_text("label\tcontent\n-1\tno labels here .\n")
    with pytest.raises(make_data.DataError, match=r"test.tsv:2: label '-1'"):
        make_data.build(tmp_path)
    missing = subprocess.run([sys.executable, str(LOOP / "make_data.py"), str(tmp_path / "o"),
                              "--shared", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and "--shared" in missing.stderr and "Traceback" not in missing.stderr


def test_users_rate_by_the_first_word():
    users = _module("users")
    assert users.first_word("Positive.") == "positive"
    assert users.first_word("  negative - the review says") == "negative"
    assert users.first_word("The review is positive") == "the"  # a chatty answer is rated down
    assert users.first_word("") == ""
