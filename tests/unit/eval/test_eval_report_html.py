"""The evaluation recipe end to end with fake models, and its HTML report in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from browser import CHROMIUM, colour_share, image_probe, screenshot_pixels
from tunelab.config.evaluation import eval_settings
from tunelab.eval.tasks import ModelCallables
from tunelab.recipes.evaluate import run_evaluation

WORDS = {"good": "positive", "bad": "negative"}


def fake_loader(ref: str):
    """'base' reads the review's mood word; 'tuned' also gets 'fine' right; both flip on 'she'."""
    def predict(chats):
        out = []
        for chat in chats:
            text = chat[-1].content.lower()
            if " she " in f" {text} ":
                out.append("negative")
            elif "good" in text or (ref == "tuned" and "fine" in text):
                out.append("positive")
            elif "bad" in text:
                out.append("negative")
            else:
                out.append("I am not sure")
        return out

    def score(chats, choices):
        return [[float(len(c)) for c in cs] for cs in choices]

    return ModelCallables(ref, predict=predict, score_choices=score)


def write_rows(path: Path) -> Path:
    rows = []
    for i in range(40):
        mood = ["good", "bad", "fine"][i % 3]
        who = ["he", "she", "they"][i % 3 if i % 2 else 2]
        rows.append({"text": f"{who} thought the film was {mood} <b>really</b> {'x' * i}",
                     "label": 0 if mood == "bad" else 1, "source": "web" if i < 20 else "news",
                     "group": "a" if i % 2 else "b", "score": i % 5})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def evaluation(tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    s = eval_settings({"text_field": "text", "labels": [0, 1], "method": "generate",
                       "label_names": {"0": "negative", "1": "positive"},
                       "slice_by": ["source", "length", "label"], "group_field": "group",
                       "counterfactual": ["gender", "religion"], "review_rows": 10,
                       "bootstrap_samples": 200})
    return run_evaluation(["base", "tuned"], str(data), s, report_dir=str(tmp_path / "report"),
                          loader=fake_loader)


def test_recipe_reports_metrics_comparison_slices_and_fairness(evaluation):
    r = evaluation.report
    assert r["models"] == ["base", "tuned"] and r["rows"] == 40
    base, tuned = r["results"]["base"], r["results"]["tuned"]
    assert sum(map(sum, base["confusion_matrix"])) == 40
    assert tuned["accuracy"] > base["accuracy"] and base["unparseable"] > 0
    acc = r["comparison"]["differences"]["tuned"]["accuracy"]
    assert acc["diff"] == pytest.approx(tuned["accuracy"] - base["accuracy"])
    assert acc["ci_low"] <= acc["diff"] <= acc["ci_high"]
    assert set(r["slices"]["base"]) == {"source", "length", "label"}
    assert r["slices"]["base"]["label"]["worst"]["slice"] in ("0", "1")
    cf = r["fairness"]["base"]["counterfactual"]
    assert cf["gender"]["probe_rows"] > 0 and cf["gender"]["flip_rate"] > 0.3
    assert cf["religion"]["probe_rows"] == 0
    assert r["fairness"]["base"]["group_fairness"]["groups"] == {"a": 20, "b": 20}
    assert any("flip rate" in f for f in r["bias_failures"])
    assert Path(r["review_sheet"]).is_file()


def test_report_folder_has_plots_json_and_predictions(evaluation):
    index = evaluation.report_path
    out = index.parent
    page = index.read_text()
    srcs = re.findall(r"<img src='([^']+)'", page)
    assert {"plots/confusion_base.png", "plots/compare.png", "plots/counterfactual.png"} <= set(srcs)
    for src in srcs:
        with Image.open(out / src) as im:
            im.verify()
    assert json.loads((out / "report.json").read_text())["rows"] == 40
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 80
    assert "<script" not in page and "&lt;b&gt;" not in page  # prompts are not on the page
    assert "worst" in page and "Comparison against base" in page


def test_likelihood_method_and_regress_task(tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    s = eval_settings({"text_field": "text", "labels": ["0", "1"], "method": "likelihood"})
    r = run_evaluation(["base"], str(data), s, loader=fake_loader).report
    assert r["unparseable"] == 0 and r["method"] == "likelihood"

    def numbers(ref):
        return ModelCallables(ref, predict=lambda chats: [f"about {len(c[-1].content) % 5}"
                                                          if i % 4 else "no idea"
                                                          for i, c in enumerate(chats)])

    s = eval_settings({"task": "regress", "text_field": "text", "label_field": "score"})
    ev = run_evaluation(["m"], str(data), s, report_dir=str(tmp_path / "rep"), loader=numbers)
    m = ev.report
    assert m["unparseable"] == 10 and m["parsed"] == 30 and m["mae"] is not None
    assert "plots/scatter_m.png" in ev.report_path.read_text()






@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make install-dev adds it)")
def test_report_renders_in_headless_chromium(evaluation, tmp_path):
    index = evaluation.report_path
    state = image_probe(index, tmp_path)
    assert state["count"] == len(re.findall(r"<img ", index.read_text())) and state["bad"] == []
    assert all(w >= 200 for w in state["widths"])

    pixels = screenshot_pixels(index, tmp_path, 3000)

    def share(rgb):
        return colour_share(pixels, rgb)

    # Slice bars of the first model (blue) and the compare plot's green "better" line.
    assert share((0x3B, 0x62, 0xA8)) > 0.001 and share((0x3B, 0x7D, 0x3B)) > 0.0005
