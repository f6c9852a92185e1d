"""Agreement numbers against scikit-learn, the ``krippendorff`` package and worked examples."""

import json
import math
import random
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from tunelab.review.agreement import (
    cohen_kappa,
    krippendorff_alpha,
    percent_agreement,
    project_agreement,
)

NAN = float("nan")

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers
# by 12 units, values a..e written as 1..5 (the paper's own example of missing values).
PAPER = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _reference(data, level, value_domain=None):
    """The package's alpha, or None where it raises (undefined) or returns NaN."""
    arr = np.array([[NAN if v is None else v for v in row] for row in data],
                   dtype=object if any(isinstance(v, str) for r in data for v in r) else float)
    if arr.dtype == object:
        arr = arr.astype(str)  # the package marks missing strings as "nan"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 where one value is used
            value = krippendorff.alpha(reliability_data=arr, level_of_measurement=level,
                                       value_domain=value_domain)
    except ValueError:
        return None
    return None if math.isnan(value) else float(value)


def test_paper_example_matches_the_published_values():
    assert round(krippendorff_alpha(PAPER, "nominal"), 3) == 0.743
    assert round(krippendorff_alpha(PAPER, "ordinal"), 3) == 0.815
    assert round(krippendorff_alpha(PAPER, "interval"), 3) == 0.849
    letters = [[None if v is None else "abcde"[v - 1] for v in row] for row in PAPER]
    assert krippendorff_alpha(letters, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(letters, "ordinal", value_domain="abcde") == pytest.approx(
        krippendorff_alpha(PAPER, "ordinal"), abs=1e-12)


def test_paper_example_by_hand_from_the_coincidence_matrix():
    # Worked by hand: the pairable values per value (n_c) are a=9, b=13, c=10, d=5, e=3
    # (n=40; unit 12 has one value); the diagonal of o is 7+10+8+4+3 = 32, so 8 fall off it
    # (unit 2: 2 of b-c, unit 6: 4 among a-b-c-d, unit 8: 2 of a-b), and nominal
    # alpha = 1 - (n - 1) * 8 / (n^2 - sum n_c^2) = 1 - 312/1216 = 0.7434.
    n_c = [9, 13, 10, 5, 3]
    by_hand = 1 - (40 - 1) * 8 / (40**2 - sum(x * x for x in n_c))
    assert krippendorff_alpha(PAPER, "nominal") == pytest.approx(by_hand, abs=1e-12)


def test_equals_the_krippendorff_package_on_random_data():
    rng = random.Random(17)
    checked = {"nominal": 0, "ordinal": 0, "interval": 0, "strings": 0, "undefined": 0}
    for _ in range(400):
        raters, units = rng.randint(2, 5), rng.randint(1, 15)
        missing = rng.choice([0.0, 0.2, 0.5, 0.8])
        top = rng.choice([2, 3, 5])
        data = [[None if rng.random() < missing else rng.randint(1, top) for _ in range(units)]
                for _ in range(raters)]
        for level in ("nominal", "ordinal", "interval"):
            ours, ref = krippendorff_alpha(data, level), _reference(data, level)
            if ref is None:
                assert ours is None, (data, level)
                checked["undefined"] += 1
            else:
                assert ours == pytest.approx(ref, abs=1e-9), (data, level)
                checked[level] += 1
        labels = [[None if v is None else "xyzvw"[v - 1] for v in row] for row in data]
        ours, ref = krippendorff_alpha(labels, "nominal"), _reference(labels, "nominal")
        assert (ours is None and ref is None) or ours == pytest.approx(ref, abs=1e-9)
        checked["strings"] += ref is not None
        # a value domain with unused values (1-5 scores) changes nothing for ordinal
        ref5 = _reference(data, "ordinal", value_domain=[1, 2, 3, 4, 5])
        ours5 = krippendorff_alpha(data, "ordinal", value_domain=[1, 2, 3, 4, 5])
        assert (ours5 is None and ref5 is None) or ours5 == pytest.approx(ref5, abs=1e-9)
    assert min(checked.values()) >= 20, checked  # every branch was really exercised


def test_alpha_edge_cases():
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 3]]) == 1.0  # perfect agreement, 3 values
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None  # one value: undefined
    assert krippendorff_alpha([[1, None], [None, 2]]) is None  # no unit with two values
    assert krippendorff_alpha([]) is None
    assert krippendorff_alpha([[1, 2], [2, 1]]) == pytest.approx(_reference([[1, 2], [2, 1]],
                                                                            "nominal"))
    assert krippendorff_alpha(np.array([[1.0, NAN, 2.0], [1.0, 3.0, 2.0]])) == 1.0
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha([[1]], "ratio")
    with pytest.raises(ValueError, match="row lengths"):
        krippendorff_alpha([[1, 2], [1]])
    with pytest.raises(ValueError, match="outside value_domain"):
        krippendorff_alpha([[1, 7], [1, 2]], "ordinal", value_domain=[1, 2, 3])
    with pytest.raises(ValueError, match="orderable"):
        krippendorff_alpha([[1, "a"], [1, "a"]], "ordinal")


def test_cohen_kappa_equals_sklearn():
    rng = random.Random(3)
    for _ in range(120):
        n = rng.randint(1, 30)
        labels = rng.choice([["good", "bad"], ["A", "B", "tie"], [1, 2, 3, 4, 5]])
        a = [rng.choice(labels) for _ in range(n)]
        b = [x if rng.random() < 0.6 else rng.choice(labels) for x in a]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns where kappa is undefined (NaN)
            ref = cohen_kappa_score(a, b)
            assert cohen_kappa_score(a, b, weights=None) == ref or math.isnan(ref)
        ours = cohen_kappa(a, b)
        if math.isnan(ref):
            assert ours is None
        else:
            assert ours == pytest.approx(ref, abs=1e-12)


def test_percent_agreement():
    assert percent_agreement([["a", "a"], ["a", "b"]]) == 0.5
    # three raters, two agree: 1 of 3 pairs; an item with one value is left out
    assert percent_agreement([["a", "a", "b"], ["x", None], [1, 1]]) == pytest.approx((1 / 3 + 1) / 2)
    assert percent_agreement([["a", None], [None]]) is None
    assert percent_agreement([[2, 2, 2], [NAN, 5, 5]]) == 1.0  # all agree


@dataclass(frozen=True)
class Ans:
    item_id: int
    reviewer: str
    answer: dict
    submitted_at: datetime


DAY1 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
DAY2 = DAY1 + timedelta(days=1)
FIELDS = {"verdict": "nominal", "score": "ordinal", "correction": "text"}


def _answers():
    t = lambda day, minutes: day + timedelta(minutes=minutes)  # noqa: E731
    return [
        Ans(1, "alice", {"verdict": "good", "score": 4, "correction": ""}, t(DAY1, 0)),
        Ans(1, "bob", {"verdict": "good", "score": 4, "correction": "   "}, t(DAY1, 5)),
        Ans(2, "bob", {"verdict": "bad", "score": 2, "correction": "fix it"}, t(DAY1, 1)),
        Ans(2, "alice", {"verdict": "bad", "score": 2, "correction": " Fix \n it"}, t(DAY1, 2)),
        Ans(3, "alice", {"verdict": "good", "score": 5}, t(DAY1, 3)),  # replaced below
        Ans(3, "bob", {"verdict": "bad", "score": 5}, t(DAY1, 4)),
        Ans(3, "alice", {"verdict": "bad", "score": 4}, t(DAY1, 30)),
        Ans(4, "carol", {"verdict": "good", "score": 1}, t(DAY1, 6)),  # one answer only
        Ans(5, "alice", {"verdict": "good", "score": 3, "correction": ""}, t(DAY1, 7)),
        Ans(5, "bob", {"verdict": "good", "score": 3, "correction": ""}, t(DAY1, 8)),
        # naive time: read as UTC, the next day
        Ans(5, "carol", {"verdict": "good", "score": 3}, datetime(2025, 3, 2, 0, 30)),
        Ans(6, "carol", {"verdict": "good", "score": 4, "correction": "x"}, t(DAY2, 1)),
        Ans(6, "bob", {"verdict": "good", "score": 4}, t(DAY2, 0)),
        Ans(7, "alice", {"verdict": "bad", "score": 3}, t(DAY2, 2)),
        Ans(7, "bob", {"verdict": "bad", "score": None}, t(DAY2, 3)),  # score not given
    ]


def test_project_agreement_numbers_and_disagreements():
    report = project_agreement(FIELDS, _answers())
    json.dumps(report)  # plain values only
    assert report["reviewers"] == ["alice", "bob", "carol"]
    assert (report["items_compared"], report["items_agreed"], report["items_disagreed"]) == (6, 2, 4)
    assert report["disagreements"] == [
        {"item_id": 2, "fields": {"correction": {"bob": "fix it", "alice": "Fix it"}}},
        {"item_id": 3, "fields": {"score": {"bob": 5, "alice": 4}}},
        {"item_id": 6, "fields": {"correction": {"bob": "", "carol": "x"}}},
        {"item_id": 7, "fields": {"score": {"alice": 3, "bob": None}}},
    ]
    verdict = report["fields"]["verdict"]
    # items 1, 2, 3 (alice's later "bad"), 5 (three raters), 6, 7: all agree
    assert (verdict["items"], verdict["percent"]) == (6, 1.0)
    assert verdict["cohen_kappa"] == pytest.approx(cohen_kappa_score(
        ["good", "bad", "bad", "good", "bad"], ["good", "bad", "bad", "good", "bad"]))
    assert verdict["pairs"] == [
        {"reviewers": ["alice", "bob"], "items": 5, "percent": 1.0},
        {"reviewers": ["alice", "carol"], "items": 1, "percent": 1.0},
        {"reviewers": ["bob", "carol"], "items": 2, "percent": 1.0},
    ]
    score = report["fields"]["score"]
    assert (score["items"], score["percent"]) == (5, pytest.approx(4 / 5))
    # first vs second answer by time on the items with exactly two scores: 1, 2, 3, 6
    assert score["cohen_kappa"] == pytest.approx(cohen_kappa_score([4, 2, 5, 4], [4, 2, 4, 4]))
    # raters alice, bob, carol by name; items 1..7
    matrix = [[4, 2, 4, None, 3, None, 3],
              [4, 2, 5, None, 3, 4, None],
              [None, None, None, 1, 3, 4, None]]
    assert score["alpha"] == pytest.approx(_reference(matrix, "ordinal"), abs=1e-12)
    assert score["pairs"][0] == {"reviewers": ["alice", "bob"], "items": 4, "percent": 0.75}
    text = report["fields"]["correction"]
    # items 1 ("" vs ""), 2, 5 (carol's absent = ""), 6 (bob's absent vs "x")
    assert (text["items"], text["percent"]) == (4, 0.5)
    assert text["cohen_kappa"] is None and text["alpha"] is None
    assert report["over_time"] == [
        {"day": "2025-03-01", "items": 3, "agreed": 1, "percent": pytest.approx(1 / 3)},
        {"day": "2025-03-02", "items": 3, "agreed": 1, "percent": pytest.approx(1 / 3)},
    ]


def test_project_agreement_when_everyone_agrees_and_when_nothing_overlaps():
    same = [Ans(i, r, {"verdict": "good"}, DAY1 + timedelta(minutes=i)) for i in range(3)
            for r in ("a", "b")]
    report = project_agreement({"verdict": "nominal"}, same)
    field = report["fields"]["verdict"]
    # one value throughout: chance agreement is total, so kappa and alpha are undefined
    assert (field["percent"], field["cohen_kappa"], field["alpha"]) == (1.0, None, None)
    assert report["disagreements"] == [] and report["items_agreed"] == 3
    alone = project_agreement({"verdict": "nominal"}, same[::2])
    assert alone["items_compared"] == 0 and alone["over_time"] == []
    assert alone["fields"]["verdict"] == {"items": 0, "percent": None, "cohen_kappa": None,
                                         "alpha": None, "pairs": []}
    with pytest.raises(ValueError, match="field levels"):
        project_agreement({"verdict": "interval"}, same)
