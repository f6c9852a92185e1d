"""Paired bootstrap, comparison tables and per-slice metrics."""

from __future__ import annotations

import numpy as np
import pytest

from tunelab.data.example import Message
from tunelab.errors import DataError
from tunelab.eval.compare import compare_results, format_comparison, paired_bootstrap
from tunelab.eval.rows import EvalRow
from tunelab.eval.slices import length_bucket, slice_metrics, slice_values
from tunelab.eval.tasks import TaskResult, mean_stat


def result(model: str, correct: list[float]) -> TaskResult:
    return TaskResult("classify", model, {"accuracy": float(np.mean(correct))},
                      [{"id": str(i), "predicted": c} for i, c in enumerate(correct)],
                      {"accuracy": mean_stat(correct)})


def test_paired_bootstrap_is_seeded_and_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 200).astype(float)
    b = np.where(rng.random(200) < 0.3, 1.0, a)  # b = a, plus some rows fixed
    one = paired_bootstrap(mean_stat(a), mean_stat(b), 200, samples=500, seed=7)
    two = paired_bootstrap(mean_stat(a), mean_stat(b), 200, samples=500, seed=7)
    assert one == two
    draws = np.random.default_rng(7).integers(0, 200, size=(500, 200))
    diffs = b[draws].mean(axis=1) - a[draws].mean(axis=1)
    assert one["diff"] == pytest.approx(b.mean() - a.mean())
    assert one["ci_low"] == pytest.approx(np.percentile(diffs, 2.5))
    assert one["ci_high"] == pytest.approx(np.percentile(diffs, 97.5))
    assert one["significant"] and one["ci_low"] > 0


def test_identical_models_have_a_zero_interval():
    same = [1.0, 0.0, 1.0, 1.0, 0.0] * 10
    rec = paired_bootstrap(mean_stat(same), mean_stat(same), 50, samples=200)
    assert rec["diff"] == 0 and rec["ci_low"] == 0 and rec["ci_high"] == 0
    assert not rec["significant"]


def test_compare_results_names_the_better_model_and_formats_a_table():
    base = result("base", [1.0, 0.0] * 50)
    tuned = result("tuned", [1.0] * 100)
    comp = compare_results([base, tuned], samples=300, seed=0)
    rec = comp["differences"]["tuned"]["accuracy"]
    assert rec["diff"] == pytest.approx(0.5) and rec["better"] and rec["significant"]
    text = format_comparison(comp)
    assert "tuned" in text and "+0.5000 [" in text and "95% CI" in text
    assert text.count(" *") == 1 and text.endswith("* the interval excludes 0")


def test_the_legend_of_the_mark_only_when_a_row_is_marked():
    # a retrain on the real model printed the legend under two unmarked rows, which read
    # as if both intervals excluded 0
    base = result("base", [1.0, 0.0] * 50)
    near = result("near", [1.0, 0.0] * 49 + [1.0, 1.0])
    comp = compare_results([base, near], samples=300, seed=0)
    assert not comp["differences"]["near"]["accuracy"]["significant"]
    assert "excludes 0" not in format_comparison(comp)
    with pytest.raises(ValueError, match="not comparable"):
        compare_results([base, result("short", [1.0])])


def rows_with(meta: list[dict], texts: list[str]) -> list[EvalRow]:
    return [EvalRow(str(i), [Message("user", t)], m.get("label"), m)
            for i, (m, t) in enumerate(zip(meta, texts, strict=True))]


def test_slices_by_field_length_and_label_call_out_the_worst():
    meta = [{"source": "web" if i % 2 else "news", "label": "a" if i < 10 else "b"}
            for i in range(20)]
    texts = ["x" * (10 if i < 15 else 100) for i in range(20)]
    rows = rows_with(meta, texts)
    correct = [1.0 if m["source"] == "news" else (1.0 if i % 4 == 1 else 0.0)
               for i, m in enumerate(meta)]
    r = result("m", correct)
    by_source = slice_metrics(r, slice_values(rows, "source", [64]))
    assert by_source["slices"]["news"] == {"n": 10, "accuracy": 1.0}
    assert by_source["slices"]["web"]["accuracy"] == pytest.approx(0.5)
    assert by_source["worst"]["slice"] == "web"
    assert by_source["worst"]["overall"] == pytest.approx(0.75)
    assert slice_values(rows, "length", [64])[:1] == ["<64"]
    assert slice_values(rows, "label", [64])[-1] == "b"
    assert length_bucket(100, [64, 128]) == "64-127" and length_bucket(500, [64, 128]) == ">=128"
    with pytest.raises(DataError, match="no row has this field"):
        slice_values(rows, "sorce", [64])


def test_lower_is_better_statistic_picks_the_highest_slice():
    r = TaskResult("regress", "m", {}, [{}] * 10, {"mae": mean_stat([1.0] * 5 + [3.0] * 5)},
                   primary="mae", lower_is_better=frozenset({"mae"}))
    out = slice_metrics(r, ["a"] * 5 + ["b"] * 5)
    assert out["worst"]["slice"] == "b"
