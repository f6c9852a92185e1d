"""Label-likelihood scoring: class probabilities, calibration (ECE, reliability plot), abstention."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from tunelab.config.evaluation import eval_settings
from tunelab.data.example import Message
from tunelab.data.task import LabelSet
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import ABSTAINED, ModelCallables, calibration, run_classify
from tunelab.recipes.evaluate import run_evaluation

# Log-likelihoods per row of the words (negative, positive): confident and right, unsure,
# confident and wrong.
SCORES = {"great": [-5.0, -0.1], "fine": [-0.8, -0.6], "awful": [-0.2, -4.0], "odd": [-0.1, -3.0]}
TRUTH = {"great": "1", "fine": "1", "awful": "0", "odd": "1"}


def scorer(ref: str = "m") -> ModelCallables:
    def score(chats, choices):
        out = []
        for chat, cs in zip(chats, choices, strict=True):
            assert cs == ["negative", "positive"]
            text = chat[-1].content
            out.append(next(v for k, v in SCORES.items() if k in text))
        return out

    def predict(chats):
        raise AssertionError("likelihood scoring must not generate")

    return ModelCallables(ref, predict=predict, score_choices=score)


def rows() -> list[EvalRow]:
    return [EvalRow(k, [Message("user", f"a {k} film")], TRUTH[k]) for k in SCORES]


def test_likelihood_scoring_keeps_probabilities_and_calibration():
    ls = LabelSet.build(["0", "1"], {"0": "negative", "1": "positive"})
    r = run_classify(scorer(), rows(), ls)
    assert r.metrics["method"] == "likelihood" and r.metrics["unparseable"] == 0
    assert [rec["predicted"] for rec in r.rows] == ["1", "1", "0", "0"]
    for rec, k in zip(r.rows, SCORES, strict=True):
        p = rec["probabilities"]
        assert math.isclose(sum(p.values()), 1.0)
        a, b = SCORES[k]
        assert p["1"] == pytest.approx(math.exp(b) / (math.exp(a) + math.exp(b)))
    conf = [rec["confidence"] for rec in r.rows]
    ok = [rec["correct"] for rec in r.rows]
    expected = calibration(conf, ok)
    assert r.metrics["ece"] == pytest.approx(expected["ece"]) and r.metrics["ece"] > 0.2
    assert sum(b["n"] for b in r.metrics["calibration"]["bins"]) == 4
    # Abstaining under 0.6 drops the unsure row from the answered ones.
    r2 = run_classify(scorer(), rows(), ls, abstain_below=0.6)
    assert [rec["answer"] for rec in r2.rows][1] == ABSTAINED
    assert r2.metrics["abstained"] == 1 and r2.metrics["coverage"] == 0.75
    assert r2.metrics["answered_accuracy"] == pytest.approx(2 / 3)
    assert r2.metrics["accuracy"] == 0.5  # an abstention is not a right answer


def test_calibration_of_a_perfectly_calibrated_set_is_zero():
    # Nine of ten right at confidence 0.9: the bin's accuracy equals its confidence.
    cal = calibration([0.9] * 10, [True] * 9 + [False])
    assert cal["ece"] == pytest.approx(0.0) and cal["bins"][0]["n"] == 10
    assert calibration([], [])["ece"] is None


def test_the_report_draws_the_reliability_plot(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"a {k} film", "label": TRUTH[k]}) + "\n"
                            for k in SCORES))
    s = eval_settings({"text_field": "text", "labels": ["0", "1"], "method": "likelihood",
                       "label_names": {"0": "negative", "1": "positive"}, "abstain_below": 0.6})
    ev = run_evaluation(["m"], str(data), s, report_dir=str(tmp_path / "report"), loader=scorer)
    png = tmp_path / "report" / "plots" / "reliability_m.png"
    assert png.is_file() and Image.open(png).size[0] > 200
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Expected calibration error" in page and "coverage" in page
    preds = [json.loads(x) for x in (tmp_path / "report" / "predictions.jsonl").read_text().splitlines()]
    assert all("probabilities" in p for p in preds)
    assert ev.report["settings"]["method"] == "likelihood"
