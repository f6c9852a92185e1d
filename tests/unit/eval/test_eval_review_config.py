"""Review sheets round-trip with rater agreement; evaluation settings validate."""

from __future__ import annotations

import csv
import json

import pytest
from sklearn.metrics import cohen_kappa_score

from tunelab.config.evaluation import load_eval_config
from tunelab.data.example import Message
from tunelab.data.task import LabelSet, TaskPrompt, task_chat
from tunelab.errors import ConfigError, DataError
from tunelab.eval.review import import_reviews, write_review_sheet
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import TaskResult


def results(n: int) -> tuple[list[EvalRow], list[TaskResult]]:
    rows = [EvalRow(f"r{i}", [Message("user", f"question {i}")], f"ref {i}") for i in range(n)]
    out = [TaskResult("generate", name, {}, [{"answer": f"{name} says {i}"} for i in range(n)])
           for name in ("base", "tuned")]
    return rows, out


def fill(sheet, out, rater, prefer_model, key):
    with open(sheet) as f:
        lines = list(csv.DictReader(f))
    for line in lines:
        letters = key["items"][line["item"]]
        pick = prefer_model(int(line["item"]))
        line["rater"] = rater
        line["preferred"] = "tie" if pick == "tie" else next(
            x for x, m in letters.items() if m == pick)
        for x, m in letters.items():
            line[f"score_{x}"] = "4" if m == "tuned" else "2"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]))
        w.writeheader()
        w.writerows(lines)
    return out


def test_review_sheet_is_blinded_and_ratings_come_back(tmp_path):
    rows, res = results(12)
    paths = write_review_sheet(tmp_path, rows, res, n=8, seed=3)
    key = json.loads(paths["key"].read_text())
    assert len(key["items"]) == 8 and key["models"] == ["base", "tuned"]
    orders = {tuple(v.values()) for v in key["items"].values()}
    assert len(orders) == 2  # shuffled: both orders occur
    assert "tuned says" in paths["html"].read_text() and "<script" not in paths["html"].read_text()
    a = fill(paths["csv"], tmp_path / "a.csv", "ann", lambda i: "tuned" if i % 4 else "base", key)
    b = fill(paths["csv"], tmp_path / "b.csv", "bob", lambda i: "tuned" if i % 2 else "tie", key)
    report = import_reviews([a, b], paths["key"])
    tuned = report["per_model"]["tuned"]
    assert report["ratings"] == 16 and report["raters"] == ["ann", "bob"]
    pref_a = ["tuned" if i % 4 else "base" for i in range(1, 9)]
    pref_b = ["tuned" if i % 2 else "tie" for i in range(1, 9)]
    wins = pref_a.count("tuned") + pref_b.count("tuned")
    assert tuned["wins"] == wins and tuned["ties"] == pref_b.count("tie")
    assert tuned["win_rate"] == pytest.approx((wins + 0.5 * pref_b.count("tie")) / 16)
    assert tuned["mean_score"] == 4.0 and report["per_model"]["base"]["mean_score"] == 2.0
    assert report["agreement"]["kappa"] == pytest.approx(cohen_kappa_score(pref_a, pref_b))


def test_bad_ratings_are_listed(tmp_path):
    rows, res = results(3)
    paths = write_review_sheet(tmp_path, rows, res, n=3)
    with open(paths["csv"]) as f:
        lines = list(csv.DictReader(f))
    lines[0].update(rater="ann", preferred="Z", score_A="9")
    with open(tmp_path / "bad.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]))
        w.writeheader()
        w.writerows(lines)
    with pytest.raises(DataError) as e:
        import_reviews([tmp_path / "bad.csv"], paths["key"])
    assert "preferred 'Z'" in str(e.value) and "score_A '9'" in str(e.value)


def test_eval_config_reads_yaml_and_flags_override(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("task: classify\nlabels: [0, 1]\nlabel_names: {0: negative, 1: positive}\n"
                   "thresholds: {max_flip_rate: 0.05}\n")
    s = load_eval_config(cfg, {"limit": 40, "seed": None})
    assert s.labels == ["0", "1"] and s.label_names == {"0": "negative", "1": "positive"}
    assert s.limit == 40 and s.seed == 0 and s.thresholds.max_flip_rate == 0.05
    assert s.max_new_tokens == 12  # the classify default
    assert load_eval_config(None, {"task": "generate"}).max_new_tokens == 256
    cfg.write_text("task: summarize\nlabels: [a]\nthresholds: {max_flip_rate: 2}\nlimt: 3\n")
    with pytest.raises(ConfigError) as e:
        load_eval_config(cfg)
    text = str(e.value)
    assert "task" in text and "labels" in text and "max_flip_rate" in text and "limt" in text


def test_label_set_maps_words_and_builds_the_default_prompt():
    ls = LabelSet.build(["0", "1"], {"0": "negative", "1": "positive"})
    assert ls.words == ["negative", "positive"] and ls.label_of("positive") == "1"
    prompt = TaskPrompt("classify", tuple(ls.words))
    chat = task_chat(prompt, [Message("user", "a fine film")])
    assert chat[0].role == "system" and "negative, positive" in chat[0].content
    assert chat[1].content.startswith("Text: a fine film") and "negative or positive?" in chat[1].content
    own = [Message("system", "mine"), Message("user", "x")]
    assert task_chat(prompt, own) == own
    with pytest.raises(ConfigError, match="not one of the labels"):
        LabelSet.build(["0", "1"], {"2": "neutral"})
