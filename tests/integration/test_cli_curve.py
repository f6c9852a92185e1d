"""`tunelab data curve` through the real entry point on a tiny random model."""

import json
import random

import pytest
import yaml
from rundata import config, write_yaml

from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.config.loader import load_config
from tunelab.train.run import load_run_examples

GOOD = ["a triumph", "see it twice", "wonderful acting", "a joy to watch"]
BAD = ["a slog", "dull and long", "a waste of time", "painfully boring"]


def write_reviews(path, n=40):
    """A small sentiment table: a text column and a 0/1 label, as SST-2 has."""
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            label = i % 2
            f.write(json.dumps({"sentence": f"{rng.choice(GOOD if label else BAD)} ({i})",
                                "label": label}) + "\n")
    return path


def task_config(tmp_path, model_dir, **data):
    cfg = config(tmp_path, model_dir, train={"max_steps": 2, "eval_every": 0})
    cfg["data"] = {"train": str(write_reviews(tmp_path / "reviews.jsonl")),
                   "validation_split": 0.25, "max_length": 256, **data}
    cfg["task"] = {"type": "classify", "text_field": "sentence",
                   "labels": {0: "negative", 1: "positive"}}
    return write_yaml(tmp_path / "sst.yaml", cfg)


def _train_lines(run):
    """The (source, line) of every training row of a finished run, from its own config."""
    _, train_ex, _ = load_run_examples(load_config(run / "config.yaml"))
    return {(e.source, e.line) for e in train_ex}


def test_a_classify_curve_trains_nested_slices_and_writes_its_report(tmp_path, tiny_model_dir,
                                                                     capsys):
    cfg = task_config(tmp_path, tiny_model_dir)
    out = tmp_path / "curve"
    code = main(["data", "curve", str(cfg), "--fractions", "0.5,1", "--out", str(out),
                 "--eval-limit", "6", "--no-progress", "--json", "lora.r=2"])
    captured = capsys.readouterr()
    assert code == exits.OK, captured.err
    printed = captured.out.splitlines()
    assert printed[0].split()[:2] == ["fraction", "rows"] and printed[0].split()[-1] == "accuracy"
    assert printed[3].startswith("verdict: ") and printed[4] == f"report: {out / 'index.html'}"
    assert "slice 1 of 2: 15 rows (0.5 of 30); ETA after the first slice" in captured.err
    assert "slice 2 of 2: 30 rows (1 of 30); ETA for the 1 slice(s) left: about" in captured.err

    curve = json.loads((out / "curve.json").read_text())
    assert curve == json.loads(printed[-1])
    assert curve["metric"] == "accuracy" and curve["lower_is_better"] is False
    assert curve["total_rows"] == 30 and curve["eval_rows"] == 6
    assert curve["evaluated_on"] == f"the task's accuracy on 6 rows of {out / 'heldout.jsonl'}"
    points = curve["points"]
    assert [p["rows"] for p in points] == [15, 30] and [p["steps"] for p in points] == [2, 2]
    for p in points:
        assert 0 <= p["value"] <= 1 and p["value"] == p["eval_metrics"]["accuracy"]
        assert p["eval_metrics"]["n"] == 6 and p["val_loss"] > 0 and p["train_tokens"] > 0
        assert p["slice_seconds"] >= p["wall_seconds"] >= p["train_seconds"] > 0
    assert curve["verdict"]["text"] == printed[3].removeprefix("verdict: ")

    # the held-out rows keep their columns; every slice validates on them, none trains on them
    held = [json.loads(x) for x in (out / "heldout.jsonl").read_text().splitlines()]
    assert len(held) == 10 and set(held[0]) == {"sentence", "label"}
    small, large = (_train_lines(out / "runs" / f"rows-{n}") for n in (15, 30))
    assert len(small) == 15 and len(large) == 30 and small < large
    assert all(json.loads((out / "runs" / f"rows-{n}" / "summary.json").read_text())
               ["validation_rows"] == 10 for n in (15, 30))

    html = (out / "index.html").read_text()
    assert html.count("data-plot=") == 2 and "rows-15" in html and "rows-30" in html
    for png in ("metric_by_rows.png", "metric_by_minutes.png"):
        assert (out / "plots" / png).read_bytes().startswith(b"\x89PNG")
    resolved = yaml.safe_load((out / "runs" / "rows-15" / "config.yaml").read_text())
    assert resolved["lora"]["r"] == 2 and resolved["data"]["train_rows"] == 15

    assert main(["runs", "list", "--dir", str(out / "runs")]) == exits.OK
    listed = capsys.readouterr().out
    assert "rows-15" in listed and "rows-30" in listed and "complete" in listed
    # a second curve into the same folder would mix runs: refused before any training
    assert main(["data", "curve", str(cfg), "--out", str(out)]) == exits.STORE
    assert "holds the runs of an earlier curve" in capsys.readouterr().err


def test_without_a_task_the_curve_is_the_validation_loss(tmp_path, tiny_model_dir, capsys):
    cfg = write_yaml(tmp_path / "chat.yaml",
                     config(tmp_path, tiny_model_dir, train={"max_steps": 1, "eval_every": 0}))
    out = tmp_path / "loss-curve"
    assert main(["data", "curve", str(cfg), "--fractions", "0.4,1", "--out", str(out),
                 "--no-progress"]) == exits.OK
    curve = json.loads((out / "curve.json").read_text())
    assert curve["metric"] == "loss" and curve["lower_is_better"] is True
    assert [p["rows"] for p in curve["points"]] == [10, 26]
    assert all(p["value"] == p["val_loss"] > 0 and p["eval_metrics"] == {} for p in curve["points"])
    assert not (out / "heldout.jsonl").exists()


@pytest.mark.parametrize(("change", "extra", "code", "says"), [
    ({"task": None}, ["--eval-data", "reviews.jsonl", "--eval-limit", "5"], exits.USAGE,
     "--eval-data, --eval-limit: only a config with a task section is scored on evaluation rows"),
    ({"task": None, "data.validation_split": 0.0}, [], exits.USAGE,
     "this config has no validation rows"),
    ({"data.validation_split": 0.0}, [], exits.USAGE, "pass --eval-data FILE"),
    ({"phases": [{"train": {"max_steps": 1}}]}, [], exits.USAGE, "phases: a learning curve"),
    ({}, ["--fractions", "0.5,1.5"], exits.USAGE, "argument --fractions: --fractions '0.5,1.5'"),
    ({}, ["--fractions", "0.01,1"], exits.USAGE, "0.01 of 30 training rows is no row"),
    ({}, ["--eval-data", "missing.tsv"], exits.DATA, "missing.tsv"),
])
def test_what_cannot_give_a_curve_is_refused_before_a_model_loads(tmp_path, monkeypatch, capsys,
                                                                 change, extra, code, says):
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load(task_config(tmp_path, tmp_path / "no-model").read_text())
    for key, value in change.items():
        section, _, name = key.partition(".")
        if value is None:
            cfg.pop(section)
        elif name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    path = write_yaml(tmp_path / "bad.yaml", cfg)
    assert main(["data", "curve", str(path), "--no-progress", *extra]) == code
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "curve-bad" / "runs").exists()
