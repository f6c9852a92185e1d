"""The classification example on another table: only data paths, fields and labels change.

``examples/classify_sst2.yaml`` is trained on a synthetic 4-class topic table whose text
column is ``body`` and whose labels are codes ``s``/``w``/``f``/``c``: the overrides name
the file, the text column and the label words, and nothing else of the recipe. The tiny
test swaps in the in-process tiny model and a few steps (a harness choice, so that it runs
in seconds); the ``real_model`` test runs the example unchanged otherwise, on SmolLM2, and
checks that the classifier is right on held-out rows.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from tunelab.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "classify_sst2.yaml"
TOPICS = {
    "s": ("sports", ["The striker scored twice in the derby", "Our team won the cup final",
                     "The coach benched the goalkeeper", "A record crowd watched the marathon",
                     "The tennis champion lost in straight sets"]),
    "w": ("weather", ["Heavy rain and strong winds tonight", "A heatwave is expected this week",
                      "Snow will cover the hills by morning", "Fog delays flights at dawn",
                      "Thunderstorms roll in after a humid afternoon"]),
    "f": ("finance", ["Shares fell after the earnings report", "The central bank raised rates",
                      "Bond yields climbed to a new high", "The company issued new stock",
                      "Inflation cooled and markets rallied"]),
    "c": ("cooking", ["Simmer the sauce and add fresh basil", "Knead the dough for ten minutes",
                      "Roast the vegetables with olive oil", "Whisk eggs and sugar until pale",
                      "Season the soup with salt and pepper"]),
}
ENDINGS = ["", " today.", ", say reports.", " again.", " - more soon.", " (update)"]


def write_topics(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "body", "topic"])
        for i in range(n):
            code = rng.choice(list(TOPICS))
            w.writerow([i, rng.choice(TOPICS[code][1]) + rng.choice(ENDINGS), code])
    return path


def overrides(tmp: Path, train: Path) -> list[str]:
    """Only what the issue allows to change: data paths, fields and labels (and where runs go)."""
    words = ", ".join(f"{k}: {v[0]}" for k, v in TOPICS.items())
    return [f"data.train={train}", "task.text_field=body", "task.label_field=topic",
            f"task.labels={{{words}}}", f"output.dir={tmp / 'runs'}", "output.name=topics"]


def eval_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["eval", *args, "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_example_trains_and_evaluates_a_four_class_table(tmp_path, tiny_model_dir, capsys):
    train = write_topics(tmp_path / "topics.csv", 48, seed=1)
    test = write_topics(tmp_path / "test.csv", 12, seed=2)
    harness = [f"model.name={tiny_model_dir}", "train.max_steps=3", "data.validation_split=0.1"]
    assert main(["train", str(EXAMPLE), *overrides(tmp_path, train), *harness, "--no-progress"]) == 0
    run = tmp_path / "runs" / "topics"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3
    # No flags: the run's task picks the columns, labels, prompt and likelihood scoring.
    report = eval_json(capsys, str(run), "--data", str(test))
    assert report["task"] == "classify" and report["rows"] == 12
    assert report["labels"] == list(TOPICS) and report["unparseable"] == 0
    assert report["label_words"] == {k: v[0] for k, v in TOPICS.items()}
    assert report["method"] == "likelihood" and report["ece"] is not None
    assert report["settings"]["text_field"] == "body"
    # generate asks the same task prompt and answers with a label word and probabilities.
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "Bond yields climbed again."]) == 0
    word, probs = capsys.readouterr().out.strip().split("\t")
    assert word in {v[0] for v in TOPICS.values()} and probs.count(" 0.") + probs.count(" 1.") == 4


@pytest.mark.real_model
@pytest.mark.slow
def test_the_example_learns_a_four_class_table_with_the_real_model(tmp_path, default_model, capsys):
    train = write_topics(tmp_path / "topics.csv", 400, seed=1)
    test = write_topics(tmp_path / "test.csv", 100, seed=2)
    assert main(["train", str(EXAMPLE), *overrides(tmp_path, train), "--no-progress"]) == 0
    run = tmp_path / "runs" / "topics"
    report = eval_json(capsys, str(run), "--data", str(test))
    summary = json.loads((run / "summary.json").read_text())
    print(f"\n4-class topics with the SST-2 example config: accuracy {report['accuracy']:.3f} "
          f"on 100 rows after {summary['train_rows']} rows, {summary['train_seconds']:.0f} s")
    assert report["accuracy"] >= 0.9 and report["unparseable"] == 0
