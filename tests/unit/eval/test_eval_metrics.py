"""Metric functions agree with scikit-learn, SciPy, sacrebleu and rouge-score on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from scipy import stats
from sklearn import metrics as skm

from tunelab.data.task import LabelSet
from tunelab.eval.metrics import (
    canonical_number,
    exact_matches,
    find_numbers,
    first_number,
    gsm8k_answer,
    regression_metrics,
    text_metrics,
)
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import Predictions, classification_result

Y_TRUE = [3.0, -0.5, 2.0, 7.0, 4.2, 1.1, 0.0, 5.5]
Y_PRED = [2.5, 0.0, 2.0, 8.0, 3.9, 1.5, -0.3, 6.0]


def test_regression_metrics_match_sklearn_and_scipy():
    m = regression_metrics(Y_TRUE, Y_PRED)
    assert m["n"] == 8
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(Y_TRUE, Y_PRED))
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(Y_TRUE, Y_PRED)))
    assert m["r2"] == pytest.approx(skm.r2_score(Y_TRUE, Y_PRED))
    assert m["pearson"] == pytest.approx(stats.pearsonr(Y_TRUE, Y_PRED)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(Y_TRUE, Y_PRED)[0])


def test_regression_metrics_undefined_values_are_none():
    assert regression_metrics([], [])["mae"] is None
    one = regression_metrics([1.0], [2.0])
    assert one["mae"] == 1.0 and one["r2"] is None and one["pearson"] is None
    constant = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert constant["pearson"] is None and constant["r2"] is not None


PREDS = ["the cat sat on the mat", "a quick brown fox", "hello there world", "it is 42",
         "nothing matches here"]
REFS = ["the cat is on the mat", "the quick brown fox jumps", "hello world", "it is 42.",
        "completely different words"]


def test_text_metrics_match_sacrebleu_and_rouge_score():
    m = text_metrics(PREDS, REFS)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDS, REFS, strict=True)]
    assert m["rouge_l_rows"] == pytest.approx(expected)
    assert m["rouge_l"] == pytest.approx(np.mean(expected))
    assert m["exact"] == [False, False, False, True, False]  # "it is 42." == "it is 42"
    assert m["exact_match"] == pytest.approx(0.2)


@pytest.mark.parametrize("text,numbers", [
    ("Natalia sold 48/2 = 24 clips.", ["48", "2", "24"]),
    ("She earned $1,200.50 and lost -3.", ["1200.5", "-3"]),
    ("72.00 and .5 and 3rd", ["72", "0.5"]),
    ("no digits", []),
])
def test_find_numbers(text, numbers):
    assert find_numbers(text) == numbers


def test_normalizers_for_gsm8k_and_numbers():
    assert gsm8k_answer("so she has 5 left.\n#### 1,234") == "1234"
    assert gsm8k_answer("Betty needs 100 - 50 - 30 - 15 = $5 more.") == "5"  # no #### line
    assert first_number("I'd say 4 out of 5") == 4.0
    assert canonical_number("007.50") == "7.5" and canonical_number("x") is None
    assert exact_matches(["The answer is 72.", "no idea"], ["#### 72", "#### 3"], "gsm8k") \
        == [True, None]
    with pytest.raises(ValueError, match="normalizer"):
        exact_matches(["a"], ["a"], "fuzzy")


def test_classification_result_matches_sklearn():
    labels = ["neg", "neu", "pos"]
    truth = ["neg", "neg", "neu", "pos", "pos", "pos", "neu", "neg", "pos", "neu"]
    pred = ["neg", "pos", None, "pos", "neu", "pos", "neu", None, "pos", "neg"]
    rows = [EvalRow(str(i), [], t) for i, t in enumerate(truth)]
    r = classification_result("m", rows, Predictions([p or "?" for p in pred], pred),
                              LabelSet.build(labels), "generate")
    # Unparseable answers as a code outside `labels`: a miss, never a predicted class.
    y_pred = [p or "unparseable" for p in pred]
    assert r.metrics["accuracy"] == pytest.approx(skm.accuracy_score(truth, y_pred))
    for avg in ("macro", "micro"):
        p, rec, f1, _ = skm.precision_recall_fscore_support(truth, y_pred, labels=labels,
                                                            average=avg, zero_division=0)
        assert r.metrics[f"{avg}_precision"] == pytest.approx(p)
        assert r.metrics[f"{avg}_recall"] == pytest.approx(rec)
        assert r.metrics[f"{avg}_f1"] == pytest.approx(f1)
    assert r.stat("macro_f1") == pytest.approx(r.metrics["macro_f1"])
    assert r.stat("accuracy") == pytest.approx(r.metrics["accuracy"])
    cm = skm.confusion_matrix(truth, y_pred, labels=[*labels, "unparseable"])
    assert r.metrics["confusion_matrix"] == cm[:3].tolist()
    assert r.metrics["unparseable"] == 2
