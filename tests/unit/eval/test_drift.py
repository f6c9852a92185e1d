"""tunelab.eval.drift: PSI values, bins, the cluster-corrected vocabulary test, and verdicts.

The false-alarm tests are seeded simulations at the sizes a monitor sees (50 to 2,000
prompts): samples of one population must not alarm, shifted ones must.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunelab.config.serve import MonitorSettings
from tunelab.eval.drift import (
    DRIFT,
    OK,
    TOO_FEW,
    UNPARSED,
    Reference,
    binned,
    categorical_drift,
    compare,
    design_effects,
    embedding_drift,
    numeric_bins,
    numeric_drift,
    psi,
    vocab_counts,
)

SETTINGS = MonitorSettings()
VOCAB = 300


def _prompts(rng: np.random.Generator, n: int, topics: np.ndarray, mean_len: float = 20.0,
             offset: int = 0) -> list[list[int]]:
    """Token-id prompts: a lognormal length, tokens from one of 8 topic distributions
    (tokens of a prompt share a topic, as words of a sentence do)."""
    out = []
    for _ in range(n):
        length = max(1, int(rng.lognormal(math.log(mean_len), 0.5)))
        topic = topics[rng.integers(len(topics))]
        out.append([int(t) + offset for t in rng.choice(VOCAB, size=length, p=topic)])
    return out


def _topics(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, VOCAB + 1)
    topics = np.array([rng.permutation(zipf) * 0.8 + zipf * 0.2 for _ in range(8)])
    return topics / topics.sum(axis=1, keepdims=True)


def test_psi_of_known_counts():
    assert psi([50, 50], [50, 50]) == 0.0
    # shares with 0.5 added to each count: r = (90.5, 10.5)/101, q = (50.5, 50.5)/101
    r, q = np.array([90.5, 10.5]) / 101, np.array([50.5, 50.5]) / 101
    assert psi([90, 10], [50, 50]) == pytest.approx(float(np.sum((q - r) * np.log(q / r))))
    assert psi([90, 10], [50, 50]) == pytest.approx(0.8531, abs=1e-4)
    assert psi([90, 10], [50, 50]) == pytest.approx(psi([50, 50], [90, 10]))  # symmetric
    # an empty bin costs a finite amount, and scale does not matter, only shares
    assert math.isfinite(psi([100, 0], [0, 100]))
    assert psi([9, 1], [5, 5]) < psi([90, 10], [50, 50])  # fewer counts: shares pulled together


def test_bins_follow_the_sample_size_and_the_reference_quantiles():
    assert [numeric_bins(n) for n in (10, 50, 100, 200, 250, 5000)] == [4, 4, 4, 8, 10, 10]
    ref = np.arange(1, 101, dtype=float)
    rc, pc = binned(ref, np.array([1.0, 50.0, 100.0, 1000.0]), 4)
    assert rc.tolist() == [25, 25, 25, 25]  # quartiles of 1..100
    assert pc.tolist() == [1, 1, 0, 2]
    # ties (token counts are integers): repeated edges merge into fewer bins
    rc, _ = binned(np.array([3.0] * 90 + [4.0] * 10), np.array([3.0]), 10)
    assert len(rc) == 2 and rc.tolist() == [90, 10]


@pytest.mark.parametrize("n", [50, 200, 1000, 2000])
def test_samples_of_the_training_population_raise_no_alarm(n):
    rng = np.random.default_rng(n)
    topics = _topics(0)
    words = ["negative", "positive"]
    train_labels = [words[int(x)] for x in rng.integers(2, size=3000)]
    ref = Reference(_prompts(rng, 3000, topics), train_labels, words)
    psis = []
    for _ in range(20):
        prod = _prompts(rng, n, topics)
        answers = [words[int(x)] for x in rng.integers(2, size=n)]
        report = compare(ref, prod, SETTINGS, answers)
        assert report.verdict == OK, [f for f in report.features if f.drifted]
        psis += [f.psi for f in report.features]
    # The bins keep PSI's small-sample bias down; at 50 prompts a PSI now and then still passes
    # the threshold by chance (its test's p does not, so no alarm).
    assert np.mean(psis) < 0.07
    assert sum(p > SETTINGS.psi_threshold for p in psis) <= (2 if n < 200 else 0)


@pytest.mark.parametrize("n", [50, 200, 2000])
def test_longer_prompts_on_other_topics_alarm(n):
    rng = np.random.default_rng(7)
    ref = Reference(_prompts(rng, 3000, _topics(0)))
    longer = compare(ref, _prompts(rng, n, _topics(0), mean_len=40), SETTINGS)
    assert longer.verdict == DRIFT and [f.feature for f in longer.drifted] == ["length"]
    other = compare(ref, _prompts(rng, n, _topics(0), offset=VOCAB // 2), SETTINGS)
    assert "vocabulary" in [f.feature for f in other.drifted]


def test_tokens_clustered_in_prompts_have_design_effects_and_iid_tokens_none():
    rng = np.random.default_rng(3)
    topics = _topics(0)
    vocab = list(range(20))
    clustered = design_effects(vocab_counts(_prompts(rng, 500, topics), vocab),
                               vocab_counts(_prompts(rng, 500, topics), vocab))
    assert clustered.shape == (20,) and clustered.max() > 3  # a few topic directions
    flat = topics.mean(axis=0, keepdims=True)  # every prompt draws from one distribution
    iid = design_effects(vocab_counts(_prompts(rng, 500, flat), vocab),
                         vocab_counts(_prompts(rng, 500, flat), vocab))
    assert iid.max() < 1.6 and abs(iid.mean() - 1) < 0.1


def test_the_cluster_correction_keeps_the_vocabulary_test_honest():
    """Without it, Pearson's chi-square on token counts calls one population two."""
    from tunelab.eval.drift import _chi2_p, pearson_chi2

    rng = np.random.default_rng(11)
    topics = _topics(0)
    ref = Reference(_prompts(rng, 3000, topics))
    raw_small = corrected_small = 0
    for _ in range(30):
        prod = _prompts(rng, 600, topics)
        vocab = ref.top_tokens[:49]
        rc, pc = vocab_counts(ref.token_lists, vocab), vocab_counts(prod, vocab)
        raw_small += _chi2_p(*pearson_chi2(rc.sum(0), pc.sum(0))) < 0.01
        corrected_small += compare(ref, prod, SETTINGS).features[1].p_value < 0.01
    assert raw_small >= 10 and corrected_small <= 1, (raw_small, corrected_small)


def test_too_few_prompts_are_not_judged():
    rng = np.random.default_rng(0)
    ref = Reference(_prompts(rng, 500, _topics(0)))
    shifted = _prompts(rng, SETTINGS.min_prompts - 1, _topics(0), mean_len=80)
    report = compare(ref, shifted, SETTINGS)
    assert report.verdict == TOO_FEW and report.features == [] and report.drifted == []
    assert "fewer than monitor.min_prompts (50)" in report.notes[0]
    assert compare(ref, [*shifted, shifted[0]], SETTINGS).verdict == DRIFT  # 50: judged


def test_predicted_labels_against_training_labels():
    words = ["negative", "positive"]
    ref = ["negative"] * 500 + ["positive"] * 500
    same = categorical_drift("labels", [*words, UNPARSED], ref,
                             ["negative"] * 100 + ["positive"] * 95 + [UNPARSED] * 5, SETTINGS)
    assert not same.drifted and same.test == "chi2"
    skewed = categorical_drift("labels", [*words, UNPARSED], ref,
                               ["positive"] * 180 + [UNPARSED] * 20, SETTINGS)
    assert skewed.drifted and skewed.psi > 1 and skewed.p_value < 1e-10


def test_unparsed_answers_of_a_classifier_are_a_label_of_their_own():
    rng = np.random.default_rng(0)
    words = ["negative", "positive"]
    ref = Reference(_prompts(rng, 1000, _topics(0)), ["negative", "positive"] * 500, words)
    prod = _prompts(rng, 200, _topics(0))
    report = compare(ref, prod, SETTINGS, [None] * 200)  # the model stopped answering a label
    assert [f.feature for f in report.drifted] == ["labels"]


def test_embeddings_compare_projections_on_the_reference_components():
    rng = np.random.default_rng(0)
    cov = np.diag([9.0, 4.0, 1.0, 0.1, 0.1, 0.1])
    ref = rng.multivariate_normal(np.zeros(6), cov, size=2000)
    same = embedding_drift(ref, rng.multivariate_normal(np.zeros(6), cov, size=300), SETTINGS)
    assert [f.feature for f in same] == ["embedding pc1", "embedding pc2", "embedding pc3"]
    assert not any(f.drifted for f in same)
    moved = rng.multivariate_normal(np.array([6.0, 0, 0, 0, 0, 0]), cov, size=300)
    assert [f.feature for f in embedding_drift(ref, moved, SETTINGS) if f.drifted] == \
        ["embedding pc1"]
    tokens = Reference([[1, 2, 3]] * 2000, embeddings=ref)
    report = compare(tokens, [[1, 2, 3]] * 300, SETTINGS, embeddings=moved)
    assert [f.feature for f in report.drifted] == ["embedding pc1"]


def test_numeric_drift_needs_both_a_large_psi_and_a_small_p():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    small_shift = numeric_drift("x", ref, rng.normal(0.15, 1, 2000), SETTINGS)
    assert small_shift.p_value < 0.01 and small_shift.psi < 0.2 and not small_shift.drifted
    few = numeric_drift("x", ref, [0.1, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, -0.2], SETTINGS)
    assert few.bins == 4 and few.psi > 0.5 and few.p_value > 0.01 and not few.drifted
