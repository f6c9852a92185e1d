"""Label checks: conflicts, kappa (against sklearn and statsmodels), the guideline."""

import csv
import random

import pytest

from tunelab.errors import DataError
from tunelab.gate.labels import (
    agreement,
    cohen_kappa,
    find_label_conflicts,
    fleiss_kappa,
    labels_in_file,
    load_guideline,
)

GUIDE = """\
labels:
  positive:
    definition: the review recommends the film
    examples: ["a triumph", "see it twice"]
  negative:
    definition: the review advises against the film
    examples: ["a slog"]
"""


def test_conflicts_are_same_input_different_labels():
    inputs = ["Good film", "good  film", "Bad film", "bad film", "other"]
    labels = [1, "0", "0", 0, 1]
    assert find_label_conflicts(inputs, labels) == [[0, 1]]  # 0 and "0" are one label


def test_cohen_kappa_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(20):
        k = rng.randint(2, 4)
        a = [rng.choice("abcd"[:k]) for _ in range(60)]
        b = [x if rng.random() < 0.6 else rng.choice("abcd"[:k]) for x in a]
        assert cohen_kappa(a, b) == pytest.approx(sklearn.cohen_kappa_score(a, b), abs=1e-12)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # chance agreement 1: undefined
    assert cohen_kappa([], []) is None


def test_fleiss_kappa_matches_statsmodels_and_the_textbook_example():
    irr = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = random.Random(1)
    for _ in range(20):
        raters, cats = rng.randint(3, 6), "abcde"[:rng.randint(2, 5)]
        items = []
        for _ in range(40):
            truth = rng.choice(cats)
            items.append([truth if rng.random() < 0.7 else rng.choice(cats)
                          for _ in range(raters)])
        table, _ = irr.aggregate_raters([[cats.index(x) for x in i] for i in items])
        kappa, per_label = fleiss_kappa(items)
        assert kappa == pytest.approx(irr.fleiss_kappa(table, method="fleiss"), abs=1e-12)
        assert set(per_label) == {c for i in items for c in i}
    # Fleiss (1971) via Wikipedia: 10 items, 14 raters, 5 categories, kappa 0.210
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
              [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
              [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[str(c) for c, n in enumerate(row) for _ in range(n)] for row in counts]
    kappa, _ = fleiss_kappa(items)
    assert kappa == pytest.approx(0.210, abs=5e-4)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["a", "b"], ["a", "b", "c"]])


def test_agreement_report_two_and_three_annotators():
    two = agreement([["pos", "pos"], ["neg", "pos"], ["neg", "neg"], ["pos", None]], ["a", "b"])
    assert two["method"] == "cohen" and two["items"] == 3 and two["items_left_out"] == 1
    assert two["confusion"] == {"neg": {"neg": 1, "pos": 1}, "pos": {"neg": 0, "pos": 1}}
    assert two["observed_agreement"] == pytest.approx(2 / 3)
    assert set(two["per_label"]) == {"neg", "pos"}
    three = agreement([["a", "a", "b"], ["b", "b", "b"]])
    assert three["method"] == "fleiss" and three["annotators"] == [
        "annotator_1", "annotator_2", "annotator_3"]
    # each item adds every ordered pair of two different annotators: 6 per item
    assert sum(sum(r.values()) for r in three["confusion"].values()) == 12
    assert three["confusion"]["a"]["b"] == three["confusion"]["b"]["a"] == 2
    with pytest.raises(DataError, match="two or more"):
        agreement([["a"], ["b"]])


def test_guideline_loads_and_reports_every_problem_with_its_line(tmp_path):
    good = tmp_path / "guide.yaml"
    good.write_text(GUIDE)
    g = load_guideline(good)
    assert list(g.labels) == ["positive", "negative"]
    assert g.labels["negative"].line == 5 and g.labels["positive"].examples[1] == "see it twice"
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels:\n  positive:\n    defintion: typo\n    examples: []\n"
                   "  0:\n    definition: zero\n    examples: [x]\n")
    with pytest.raises(DataError) as e:
        load_guideline(bad)
    text = str(e.value)
    assert f"{bad}:2 labels.positive.defintion: unknown key" in text
    assert f"{bad}:2 labels.positive.definition: missing" in text
    assert f"{bad}:2 labels.positive.examples" in text
    assert "labels.0" not in text  # the numeric label is fine
    broken = tmp_path / "broken.yaml"
    broken.write_text("labels: [unclosed\n")
    with pytest.raises(DataError, match="not valid YAML"):
        load_guideline(broken)
    with pytest.raises(DataError, match="'labels' mapping"):
        empty = tmp_path / "empty.yaml"
        empty.write_text("other: 1\n")
        load_guideline(empty)


def test_labels_in_file_conflicts_unknown_labels_and_agreement(tmp_path):
    guide = tmp_path / "guide.yaml"
    guide.write_text(GUIDE)
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "r1", "r2"])
        w.writerows([["Great film", "positive", "positive", "positive"],
                     ["great film", "negative", "positive", "negative"],
                     ["A slog", "postive", "negative", "negative"],
                     ["Fine", "", "positive", ""]])
    report = labels_in_file(path, label="label", annotators=["r1", "r2"], guideline=guide)
    assert report.inputs == ["text"]
    assert report.counts == {"": 1, "negative": 1, "positive": 1, "postive": 1}
    assert report.conflicts == [{"lines": [2, 3], "labels": ["positive", "negative"]}]
    codes = [(f.line, f.code) for f in report.findings]
    assert codes == [(2, "conflicting_labels"), (3, "conflicting_labels"), (4, "unknown_label"),
                     (5, "missing_label")]
    assert "did you mean 'positive'" in report.findings[2].message
    assert report.agreement["items"] == 3 and report.agreement["items_left_out"] == 1
    assert report.to_json()["conflicts"] == report.conflicts
    with pytest.raises(DataError, match="nothing to check"):
        labels_in_file(path)
    with pytest.raises(DataError, match="did you mean 'label'"):
        labels_in_file(path, label="lable")


def test_annotations_column_holds_lists(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "votes": ["x", "x", "y"]}\n'
                    '{"text": "b", "votes": "[\\"y\\", \\"y\\", \\"y\\"]"}\n')
    report = labels_in_file(path, annotations="votes")
    assert report.agreement["method"] == "fleiss" and report.agreement["items"] == 2
    path.write_text('{"text": "a", "votes": 3}\n')
    with pytest.raises(DataError, match="not lists"):
        labels_in_file(path, annotations="votes")
