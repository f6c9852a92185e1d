"""Counterfactual swaps, flip rates and group gaps, fairlearn group metrics, term YAML."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from tunelab.data.example import Message
from tunelab.data.task import LabelSet
from tunelab.errors import ConfigError
from tunelab.eval.fairness import Swapper, bias_failures, counterfactual_probe, group_fairness
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import Predictions, classification_result
from tunelab.eval.terms import DEFAULT_TERMS, load_terms


def test_swapper_keeps_case_and_whole_words():
    s = Swapper(DEFAULT_TERMS["gender"])
    assert s.rewrite("He gave his sister the HIM book; Shelby stays.", "female") \
        == "She gave her sister the HER book; Shelby stays."
    assert s.rewrite("She told her mother.", "male") == "He told his father."
    assert not s.mentions("Shelby and theme")


def fake_classifier(rows: list[EvalRow]):
    """Says "1" whenever the prompt has a female term: a biased model."""
    female = Swapper(DEFAULT_TERMS["gender"])
    answers = []
    for r in rows:
        text = r.user_text.lower()
        answers.append("1" if any(f" {w} " in f" {text} " for w in ("she", "her", "woman"))
                       else "0")
    del female
    return classification_result("fake", rows, Predictions(answers, list(answers)),
                                 LabelSet.build(["0", "1"]), "generate")


def test_counterfactual_probe_reports_flips_and_the_gap():
    texts = ["he is a good man", "she is a kind woman", "the weather is fine", "his work is late"]
    rows = [EvalRow(str(i), [Message("user", t)], "0") for i, t in enumerate(texts)]
    out = counterfactual_probe(rows, DEFAULT_TERMS, ["gender", "religion"], fake_classifier)
    g = out["gender"]
    assert g["probe_rows"] == 3 and g["variants"] == 3
    assert g["flips"] == 3 and g["flip_rate"] == 1.0
    assert g["groups"]["female"]["flip_rate"] == 1.0 and g["groups"]["female"]["changed"] == 2
    # Every probe row as the male version is "0" (correct), as the female version "1".
    assert g["groups"]["male"]["accuracy"] == 1.0 and g["groups"]["female"]["accuracy"] == 0.0
    assert g["gap"] == 1.0
    assert out["religion"]["probe_rows"] == 0
    fails = bias_failures({"counterfactual": out}, {"max_flip_rate": 0.1, "max_group_gap": 0.1})
    assert len(fails) == 2 and "gender" in fails[0]
    with pytest.raises(ConfigError, match="unknown category 'caste'"):
        counterfactual_probe(rows, DEFAULT_TERMS, ["caste"], fake_classifier)


def test_group_fairness_matches_fairlearn():
    truth = ["1", "0", "1", "1", "0", "0", "1", "0", "1", "0"]
    pred = ["1", "0", "0", "1", "1", "0", "1", None, "1", "1"]
    groups = ["a", "a", "a", "a", "a", "b", "b", "b", "b", "b"]
    out = group_fairness(truth, pred, groups, ["0", "1"])
    yt = np.array([t == "1" for t in truth], dtype=int)
    yp = np.array([p == "1" for p in pred], dtype=int)
    expected_dp = demographic_parity_difference(yt, yp, sensitive_features=groups)
    expected_eo = equalized_odds_difference(yt, yp, sensitive_features=groups)
    assert out["per_label"]["1"]["demographic_parity_difference"] == pytest.approx(expected_dp)
    assert out["per_label"]["1"]["equalized_odds_difference"] == pytest.approx(expected_eo)
    assert out["demographic_parity_difference"] >= expected_dp
    assert out["per_label"]["1"]["by_group"]["a"]["selection_rate"] == pytest.approx(0.6)
    assert out["groups"] == {"a": 5, "b": 5}


def test_terms_yaml_extends_and_validates(tmp_path):
    extra = tmp_path / "terms.yaml"
    extra.write_text("gender:\n  male: [lad]\n  female: [lass]\ncaste:\n  a: [x, y]\n  b: [z, w]\n")
    terms = load_terms(extra)
    assert terms["gender"]["male"][-1] == "lad" and terms["caste"]["b"] == ["z", "w"]
    assert "lad" not in DEFAULT_TERMS["gender"]["male"]  # the defaults are not changed
    bad = tmp_path / "bad.yaml"
    bad.write_text("gender:\n  male: [lad, chap]\n  female: [lass]\nx:\n  only: [one]\n")
    with pytest.raises(ConfigError) as e:
        load_terms(bad)
    assert "same number of terms" in str(e.value) and "two or more groups" in str(e.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_terms(tmp_path / "missing.yaml")
