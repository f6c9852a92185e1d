"""tunelab.eval.abtest: numbers against scipy/statsmodels, and the statistical properties
the experiment report promises, checked by seeded simulation.

The simulations are seeded, so each test is deterministic; their tolerances are still
set several standard errors wide, so a change of seed would not make them flake.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from tunelab.eval import abtest
from tunelab.eval.abtest import (
    compare,
    cs_half_width,
    estimate,
    newcombe,
    observations_needed,
    pooled_z_test,
    sample,
    sample_ratio_check,
    sequential_test,
    unit_ids,
)


@pytest.mark.parametrize(("x_c", "n_c", "x_t", "n_t"),
                         [(50, 100, 60, 100), (0, 40, 3, 45), (38, 40, 40, 40), (7, 300, 19, 280)])
def test_newcombe_and_z_test_match_statsmodels(x_c, n_c, x_t, n_t):
    low, high = newcombe(x_c, n_c, x_t, n_t)
    ref = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="newcomb", compare="diff")
    assert low == pytest.approx(ref[0], abs=1e-12) and high == pytest.approx(ref[1], abs=1e-12)
    assert pooled_z_test(x_c, n_c, x_t, n_t) == pytest.approx(
        proportions_ztest([x_t, x_c], [n_t, n_c])[1], rel=1e-9)


def test_independent_proportions_use_newcombe_and_means_welch():
    rng = np.random.default_rng(0)
    a, b = rng.random(150) < 0.4, rng.random(170) < 0.55
    d = compare("up", "proportion", "a", "b", sample(a, range(150)), sample(b, range(150, 320)))
    assert d.method == "newcombe"
    assert (d.low, d.high) == pytest.approx(newcombe(a.sum(), 150, b.sum(), 170))
    x, y = rng.normal(3.0, 1.0, 80), rng.normal(3.4, 2.0, 60)
    d = compare("score", "mean", "a", "b", sample(x, range(80)), sample(y, range(80, 140)))
    ref = CompareMeans(DescrStatsW(y), DescrStatsW(x))
    assert d.method == "welch" and d.estimate == pytest.approx(y.mean() - x.mean())
    assert (d.low, d.high) == pytest.approx(ref.tconfint_diff(usevar="unequal"), rel=1e-9)
    assert d.p_value == pytest.approx(ref.ttest_ind(usevar="unequal")[1], rel=1e-9)


def test_delta_variance_reduces_to_the_sample_variance_for_single_observations():
    x = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    e = estimate(sample(x, range(6)))
    assert e.units == 6 and e.variance == pytest.approx(x.var(ddof=1) / 6)
    # two units of three observations: the variance is of the two units' means
    e = estimate(sample(x, [0, 0, 0, 1, 1, 1]))
    assert e.units == 2 and e.variance == pytest.approx(((2 - 3 * 4 / 6) ** 2 * 2) / 36 * 2)


def test_unit_ids_share_names_and_isolate_unknowns():
    ids = unit_ids(["u1", None, "u2", "u1", None])
    assert ids[0] == ids[3] and len(set(ids)) == 4


def test_srm_matches_scipy_and_flags_units_outside_the_weights():
    r = sample_ratio_check({"a": 530, "b": 470}, {"a": 1, "b": 1})
    ref = stats.chisquare([530, 470])
    assert r.p_value == pytest.approx(ref.pvalue) and r.chi2 == pytest.approx(ref.statistic)
    assert not r.alarm and r.expected == {"a": 500, "b": 500}
    r = sample_ratio_check({"a": 900, "b": 100}, {"a": 0.5, "b": 0.5})
    assert r.alarm and r.p_value < 1e-100
    r = sample_ratio_check({"a": 3, "b": 2, "c": 1}, {"a": 1, "b": 1})
    assert r.alarm and r.p_value == 0.0 and r.chi2 is None
    r = sample_ratio_check({}, {"a": 1, "b": 1})
    assert r.p_value is None and not r.alarm
    r = sample_ratio_check({"a": 10}, {"a": 1, "b": 0})  # one weighted variant: nothing to test
    assert r.p_value is None


def _coverage(make, truth: float, sims: int) -> float:
    hits = 0
    for _ in range(sims):
        c, t = make()
        d = compare("x", "proportion", "c", "t", c, t)
        hits += d.low <= truth <= d.high
    return hits / sims


def test_fixed_horizon_interval_covers_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    n = 200

    def independent():
        return (sample(rng.random(n) < 0.30, range(n)),
                sample(rng.random(n) < 0.35, range(n, 2 * n)))

    # 1500 runs: the coverage's standard error is 0.0056; +-0.02 is over 3.5 of them
    assert abs(_coverage(independent, 0.05, 1500) - 0.95) < 0.02

    def clustered(naive: bool = False):
        arms = []
        for p, first in ((0.5, 0), (0.6, 10_000)):
            users = 60
            lean = np.clip(p + rng.normal(0, 0.25, users), 0, 1)  # strong per-user leaning
            k = 1 + rng.poisson(6, users)
            units = np.repeat(np.arange(first, first + users), k)
            values = rng.random(len(units)) < np.repeat(lean, k)
            arms.append(sample(values, np.arange(len(units)) + first if naive else units))
        return arms[0], arms[1]

    # the truth of the clipped leaning: the mean of clip(p + N(0, 0.25), 0, 1) per arm
    z = rng.normal(0, 0.25, 2_000_000)
    truth = float(np.clip(0.6 + z, 0, 1).mean() - np.clip(0.5 + z, 0, 1).mean())
    assert abs(_coverage(clustered, truth, 800) - 0.95) < 0.03
    # treating correlated ratings as independent gives intervals that are far too narrow
    assert _coverage(lambda: clustered(naive=True), truth, 800) < 0.85


def _aa_days(rng: np.random.Generator, days: int, per_day: int):
    times = np.repeat(np.arange(days), per_day).astype(float)
    n = days * per_day
    return (sample(rng.random(n) < 0.5, range(n), times),
            sample(rng.random(n) < 0.5, range(n, 2 * n), times))


def test_daily_looks_keep_false_positives_below_alpha_where_the_naive_test_does_not():
    rng = np.random.default_rng(2)
    sims, days, per_day = 300, 20, 60
    sequential = naive = 0
    for _ in range(sims):
        c, t = _aa_days(rng, days, per_day)
        r = sequential_test("up", "c", "t", c, t, looks=list(range(days)))
        sequential += r.decision != "not yet known"
        naive += any(pooled_z_test(c.values[:k].sum(), k, t.values[:k].sum(), k) < 0.05
                     for k in range(per_day, (days + 1) * per_day, per_day))
    # Ville's bound: <= 0.05; 300 runs give a standard error of 0.013 at 0.05
    assert sequential / sims <= 0.05
    assert naive / sims > 0.15  # peeking 20 times: about one in four (Armitage et al.)


def test_the_default_dense_looks_keep_false_positives_below_alpha():
    rng = np.random.default_rng(3)
    sims = 120
    wrong = sum(sequential_test("up", "c", "t", *_aa_days(rng, 10, 150)).decision
                != "not yet known" for _ in range(sims))
    assert wrong / sims <= 0.05


def test_a_clear_difference_is_found_in_both_directions():
    rng = np.random.default_rng(4)
    n = 1500
    times = np.arange(n, dtype=float)
    c = sample(rng.random(n) < 0.5, range(n), times)
    for p, decision in ((0.6, "better"), (0.4, "worse")):
        t = sample(rng.random(n) < p, range(n, 2 * n), times)
        r = sequential_test("up", "c", "t", c, t)
        assert r.decision == decision and r.needed is None
        assert r.low is not None and r.high is not None and r.low <= r.estimate <= r.high
        assert (r.low > 0) == (decision == "better")
        assert r.p_value < abtest.ALPHA and len(r.looks) == abtest.MAX_LOOKS


def test_too_few_observations_give_no_verdict_but_an_estimate_of_what_is_needed():
    rng = np.random.default_rng(5)
    c = sample(rng.random(40) < 0.5, range(40), np.arange(40.0))
    t = sample(rng.random(40) < 0.7, range(40, 80), np.arange(40.0))
    r = sequential_test("up", "c", "t", c, t)
    assert r.decision == "not yet known" and r.looks == [] and r.p_value == 1.0
    assert r.needed is not None and r.needed >= 2 * abtest.MIN_PER_ARM


def test_observations_needed_is_the_first_count_that_suffices():
    effect, variance, n = 0.03, 0.0008, 500
    need = observations_needed(effect, variance, n)
    z = stats.norm.ppf(abtest.POWER)

    def margin(total):
        v = variance * n / total
        return cs_half_width(v) + z * math.sqrt(v)

    assert need is not None and margin(need) <= effect < margin(need - 1)
    assert observations_needed(0.0, variance, n) is None


def test_at_the_needed_count_the_rule_decides_about_as_often_as_promised():
    """Data drawn with the observed difference as the truth, n = the estimate: decided
    at the last look with probability POWER (0.8)."""
    rng = np.random.default_rng(6)
    p_c, p_t, n_now = 0.50, 0.56, 400  # per arm now
    v_now = p_c * (1 - p_c) / n_now + p_t * (1 - p_t) / n_now
    need = observations_needed(p_t - p_c, v_now, 2 * n_now)
    assert need is not None
    per_arm = need // 2
    sims, decided = 300, 0
    for _ in range(sims):
        c = sample(rng.random(per_arm) < p_c, range(per_arm), np.zeros(per_arm))
        t = sample(rng.random(per_arm) < p_t, range(per_arm, 2 * per_arm), np.zeros(per_arm))
        decided += sequential_test("up", "c", "t", c, t, looks=[0.0]).decision == "better"
    assert abs(decided / sims - abtest.POWER) < 0.08  # standard error 0.023
