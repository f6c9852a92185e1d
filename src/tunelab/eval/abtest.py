"""A/B experiment statistics: differences against the control, the sample-ratio check,
and an always-valid sequential decision.

Every metric is a mean of per-observation values (1/0 for a thumbs-up, a score 1-5, a
latency) that belong to units (users). Observations of one user are correlated, so when
any unit contributes more than one observation the variance of a mean is the delta-method
(cluster-robust) one, ``sum_i (y_i - R n_i)^2 / (sum n)^2 * K/(K-1)`` over the K units'
sums ``y_i`` and counts ``n_i`` (Deng, Knoblich, Lu 2018, "Applying the delta method in
metric analytics"); treating such observations as independent gives intervals that are
too narrow. When every unit contributes one observation the classical small-sample
methods apply: Welch's interval and t-test for a difference of means, and for a
difference of proportions Newcombe's hybrid score interval (Newcombe 1998, method 10,
built from two Wilson intervals) with the pooled two-proportion z-test. Newcombe rather
than Wald: Wald's interval undercovers with small counts or rates near 0 or 1 (a
thumbs-up rate of 0.95 on 40 ratings, an error rate of 0 in one arm), Newcombe's keeps
close to the nominal rate there and equals Wald for large n. Clustered proportions keep
Newcombe's interval on effective counts: each arm's n divided by its design effect (the
delta-method variance over the binomial one, at least 1); clustered means use the
delta-method variance with a normal interval.

The sample-ratio-mismatch (SRM) check is a chi-square goodness-of-fit test of units per
variant against the configured weights. It alarms at p < 0.001, not 0.05: the check runs
at every look of every experiment, and a real mismatch (a variant that crashes for some
users, a redirect that drops them) gives p-values far below 0.001 within days, while a
0.05 threshold would cry wolf once in twenty reports and teach people to ignore it.

The sequential rule is the mixture sequential probability ratio test (mSPRT) with a
normal mixture (Johari, Koomen, Pekelis, Walsh 2017, "Peeking at A/B tests"; "Always
valid inference"). With the difference ``d`` estimated as ``e`` with variance ``V`` and
the mixture ``d ~ N(0, tau^2)``, the likelihood ratio is
``L = sqrt(V/(V+tau^2)) * exp(e^2 tau^2 / (2 V (V+tau^2)))``; the always-valid p-value is
the running minimum of ``min(1, 1/L)`` over every look, and the confidence sequence is
``e +- sqrt(V (V+tau^2)/tau^2 * (2 log(1/alpha) + log((V+tau^2)/V)))`` intersected over
looks. By Ville's inequality the chance that the p-value ever drops below alpha when
there is no difference is at most alpha, however often anyone looks; a badly chosen
``tau`` costs power, never validity. The guarantee is asymptotic here (normal
approximation, plug-in variance), so the sequence starts only once each arm has
``MIN_PER_ARM`` observations.

"About N more needed" (``observations_needed``) takes the observed difference as the
truth and the spread as it is now, and finds the total at which the always-valid
interval would exclude 0 with probability ``POWER``; a smaller true difference needs more.

This module knows nothing of the database, of HTTP or of the command line: it takes
arrays per variant and returns dataclasses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats

ALPHA = 0.05  # two-sided error rate of the intervals, the tests and the sequential rule
SRM_P_VALUE = 0.001  # the sample-ratio check alarms below this (see the module docstring)
MIXTURE_SD = 0.05  # tau: the effect the mSPRT is tuned for, in the metric's units (5 points of thumbs-up rate)
MIN_PER_ARM = 100  # observations per arm before the sequence starts (normal approximation)
MAX_LOOKS = 100  # looks evaluated when none are given: evenly spaced over the arrivals
POWER = 0.8  # "N more needed": the count at which the rule decides with this probability

Kind = Literal["proportion", "mean"]
Decision = Literal["better", "worse", "not yet known"]


@dataclass(frozen=True)
class Sample:
    """One metric's observations in one variant.

    Attributes:
        values: one number per observation (1.0/0.0 for a proportion).
        units: the unit (cluster) id of each observation; see ``unit_ids``.
        times: when each observation arrived (any increasing scale, e.g. Unix seconds);
            needed by the sequential rule only.
    """

    values: np.ndarray
    units: np.ndarray
    times: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)


def sample(values: Sequence[float], units: Sequence[int],
           times: Sequence[float] | None = None) -> Sample:
    """A ``Sample`` from plain sequences (floats, integer unit ids, times)."""
    return Sample(np.asarray(values, dtype=float), np.asarray(units, dtype=np.int64),
                  None if times is None else np.asarray(times, dtype=float))


def unit_ids(units: Sequence[str | None]) -> np.ndarray:
    """Integer cluster ids for unit names; each ``None`` (no unit known) is a cluster of its own.

    Use one call for all variants of a metric, so a unit keeps its id across variants.
    """
    ids: dict[str, int] = {}
    out = np.empty(len(units), dtype=np.int64)
    for i, u in enumerate(units):
        out[i] = ids.setdefault(u, len(ids)) if u is not None else -1 - i
    return out


@dataclass(frozen=True)
class Estimate:
    """A variant's mean of one metric: observations, units, and the variance of the mean."""

    mean: float | None
    n: int
    units: int
    variance: float | None  # of the mean; delta method over units (see the module docstring)


def estimate(s: Sample) -> Estimate:
    """The mean of a sample and its cluster-robust variance (None where undefined)."""
    n = len(s)
    if n == 0:
        return Estimate(None, 0, 0, None)
    _, inverse = np.unique(s.units, return_inverse=True)
    y = np.bincount(inverse, weights=s.values)
    c = np.bincount(inverse).astype(float)
    k = len(y)
    mean = float(y.sum() / c.sum())
    if k < 2:
        return Estimate(mean, n, k, None)
    variance = float(((y - mean * c) ** 2).sum() / c.sum() ** 2 * k / (k - 1))
    return Estimate(mean, n, k, variance)


@dataclass(frozen=True)
class Difference:
    """Treatment minus control for one metric, with a two-sided interval and test."""

    metric: str
    control: str
    treatment: str
    control_value: float | None
    treatment_value: float | None
    estimate: float | None
    low: float | None
    high: float | None
    p_value: float | None
    method: str  # newcombe[, design effect] | welch | delta (clustered by unit) | too few observations
    alpha: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return bool(self.low is not None and self.high is not None
                    and (self.low > 0 or self.high < 0))


def wilson(x: float, n: float, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``x / n``."""
    z = stats.norm.ppf(1 - alpha / 2)
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x_c: float, n_c: float, x_t: float, n_t: float,
             alpha: float = ALPHA) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``x_t/n_t - x_c/n_c`` (Newcombe 1998, method 10)."""
    p_c, p_t = x_c / n_c, x_t / n_t
    l_c, u_c = wilson(x_c, n_c, alpha)
    l_t, u_t = wilson(x_t, n_t, alpha)
    d = p_t - p_c
    return (d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2),
            d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2))


def pooled_z_test(x_c: float, n_c: float, x_t: float, n_t: float) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (1.0 when every value is equal)."""
    pooled = (x_c + x_t) / (n_c + n_t)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    if se == 0:
        return 1.0
    return float(2 * stats.norm.sf(abs(x_t / n_t - x_c / n_c) / se))


def _effective(e: Estimate, independent: bool) -> tuple[float, float]:
    """Successes and trials of a proportion, shrunk by its design effect when clustered.

    The design effect is the delta-method variance over the binomial one (at least 1):
    ``n / deff`` independent trials carry as much information as the clustered ``n``
    (Donner and Klar 2000), so Newcombe's interval keeps its behaviour at small counts.
    """
    assert e.mean is not None and e.variance is not None
    binomial = e.mean * (1 - e.mean) / e.n
    deff = 1.0 if independent or binomial == 0 else max(1.0, e.variance / binomial)
    return e.mean * e.n / deff, e.n / deff


def compare(metric: str, kind: Kind, control: str, treatment: str, c: Sample, t: Sample,
            alpha: float = ALPHA) -> Difference:
    """Treatment minus control for one metric.

    Args:
        metric: the metric's name, as reported.
        kind: ``proportion`` (values are 0/1) or ``mean``.
        control, treatment: the variants' names.
        c, t: their observations.
        alpha: 1 - the interval's coverage, and the test's level.

    Returns:
        The difference; interval and p-value are None with fewer than 2 observations
        (or units) in an arm, or when neither arm varies at all.
    """
    ec, et = estimate(c), estimate(t)
    def result(estimate: float | None, low: float | None, high: float | None,
               p_value: float | None, method: str) -> Difference:
        def num(x: float | None) -> float | None:  # plain floats: numpy's break JSON booleans
            return None if x is None else float(x)

        return Difference(metric, control, treatment, ec.mean, et.mean, num(estimate), num(low),
                          num(high), num(p_value), method, alpha)

    if ec.mean is None or et.mean is None or ec.variance is None or et.variance is None:
        d = None if ec.mean is None or et.mean is None else et.mean - ec.mean
        return result(d, None, None, None, "too few observations")
    d = et.mean - ec.mean
    independent = ec.units == ec.n and et.units == et.n
    if kind == "proportion":
        (x_c, n_c), (x_t, n_t) = _effective(ec, independent), _effective(et, independent)
        low, high = newcombe(x_c, n_c, x_t, n_t, alpha)
        return result(d, low, high, pooled_z_test(x_c, n_c, x_t, n_t),
                      "newcombe" if independent else "newcombe, design effect (clustered by unit)")
    se = math.sqrt(ec.variance + et.variance)
    if se == 0:  # neither arm varies: nothing to test
        return result(d, d, d, 1.0 if d == 0 else 0.0, "no variation")
    if independent:
        r = stats.ttest_ind(t.values, c.values, equal_var=False)
        ci = r.confidence_interval(1 - alpha)
        return result(d, float(ci.low), float(ci.high), float(r.pvalue), "welch")
    z = stats.norm.ppf(1 - alpha / 2)
    return result(d, d - z * se, d + z * se, float(2 * stats.norm.sf(abs(d) / se)),
                  "delta (clustered by unit)")


@dataclass(frozen=True)
class SampleRatio:
    """The observed split of units against the configured weights."""

    observed: dict[str, int]
    expected: dict[str, float]  # units expected per variant, from the weights
    shares: dict[str, float]  # the weights as fractions
    chi2: float | None  # None: nothing to test, or infinite (units in a variant without weight)
    p_value: float | None  # None: nothing to test (no units, or one weighted variant)
    threshold: float

    @property
    def alarm(self) -> bool:
        """Whether the split is too unlikely under the weights (p below the threshold)."""
        return self.p_value is not None and self.p_value < self.threshold


def sample_ratio_check(observed: Mapping[str, int], weights: Mapping[str, float],
                       threshold: float = SRM_P_VALUE) -> SampleRatio:
    """Chi-square goodness-of-fit of units per variant against the weights.

    A variant with units that has no (or zero) weight is a mismatch by itself: p = 0.
    Zero-weight variants with no units are left out of the test.

    Args:
        observed: units per variant.
        weights: the configured weights (relative; need not sum to 1).
        threshold: alarm below this p-value.
    """
    names = list(weights) + [v for v in observed if v not in weights]
    total_w = sum(weights.values())
    shares = {v: weights.get(v, 0.0) / total_w for v in names}
    obs = {v: int(observed.get(v, 0)) for v in names}
    n = sum(obs.values())
    expected = {v: shares[v] * n for v in names}
    if n == 0:
        return SampleRatio(obs, expected, shares, None, None, threshold)
    if any(obs[v] > 0 and shares[v] == 0 for v in names):
        return SampleRatio(obs, expected, shares, None, 0.0, threshold)  # chi2 is infinite
    tested = [v for v in names if shares[v] > 0]
    if len(tested) < 2:
        return SampleRatio(obs, expected, shares, None, None, threshold)
    r = stats.chisquare([obs[v] for v in tested], [expected[v] for v in tested])
    return SampleRatio(obs, expected, shares, float(r.statistic), float(r.pvalue), threshold)


def msprt_p_value(effect: float, variance: float, tau: float = MIXTURE_SD) -> float:
    """``min(1, 1/L)`` for the normal-mixture likelihood ratio ``L`` at one look."""
    t2 = tau * tau
    log_l = 0.5 * math.log(variance / (variance + t2)) \
        + effect * effect * t2 / (2 * variance * (variance + t2))
    return math.exp(-log_l) if log_l > 0 else 1.0


def cs_half_width(variance: float, alpha: float = ALPHA, tau: float = MIXTURE_SD) -> float:
    """Half-width of the always-valid interval at one look with variance ``variance``."""
    t2 = tau * tau
    return math.sqrt(variance * (variance + t2) / t2
                     * (2 * math.log(1 / alpha) + math.log((variance + t2) / variance)))


def observations_needed(effect: float, variance: float, n: int, alpha: float = ALPHA,
                        tau: float = MIXTURE_SD, power: float = POWER) -> int | None:
    """Total observations at which the always-valid interval would exclude 0 with ``power``.

    Assumes the true difference is the observed ``effect`` and that the variance shrinks
    as ``V_N = variance * n / N`` (same split, same spread). The smallest N with
    ``cs_half_width(V_N) + z_power * sqrt(V_N) <= |effect|``: the estimate, normal around
    ``effect`` with variance ``V_N``, then lies beyond the half-width with probability
    ``power`` at that look alone (earlier looks only add chances). None when ``effect``
    is 0 or the N would pass 10**15.
    """
    if effect == 0 or variance <= 0:
        return None
    s2 = variance * n  # N times the variance at N: constant under the assumption
    z = float(stats.norm.ppf(power))

    def enough(total: int) -> bool:
        v = s2 / total
        return cs_half_width(v, alpha, tau) + z * math.sqrt(v) <= abs(effect)

    if enough(n):
        return n
    lo, hi = n, max(2 * n, 2)
    while not enough(hi):
        lo, hi = hi, hi * 2
        if hi > 10**15:
            return None
    while hi - lo > 1:  # enough() turns true once and stays true as N grows
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class Look:
    """One look of the sequential rule: the data up to ``time``."""

    time: float
    n: int  # observations in both arms
    estimate: float
    low: float  # this look's always-valid interval (not yet intersected)
    high: float
    p_value: float  # this look's min(1, 1/L)


@dataclass(frozen=True)
class Sequential:
    """The always-valid decision on one metric's difference (treatment minus control)."""

    metric: str
    control: str
    treatment: str
    alpha: float
    mixture_sd: float
    n: int  # observations in both arms now
    estimate: float | None
    low: float | None  # the confidence sequence, intersected over looks; None before the start
    high: float | None
    p_value: float  # always valid: the running minimum over looks
    decision: Decision
    needed: int | None  # total observations to decide with POWER, at the observed effect
    looks: list[Look] = field(default_factory=list)


def _look_times(c: Sample, t: Sample, looks: Sequence[float] | None) -> list[float]:
    assert c.times is not None and t.times is not None  # checked by the caller
    if looks is not None:
        return sorted(looks)
    both = np.sort(np.concatenate([c.times, t.times]))
    start = max(np.sort(c.times)[MIN_PER_ARM - 1], np.sort(t.times)[MIN_PER_ARM - 1])
    after = both[both >= start]
    picks = np.linspace(0, len(after) - 1, min(MAX_LOOKS, len(after))).round().astype(int)
    return sorted({float(after[i]) for i in picks})


def _upto(s: Sample, time: float) -> Sample:
    assert s.times is not None
    keep = s.times <= time
    return Sample(s.values[keep], s.units[keep], s.times[keep])


def sequential_test(metric: str, control: str, treatment: str, c: Sample, t: Sample,
                    alpha: float = ALPHA, tau: float = MIXTURE_SD,
                    looks: Sequence[float] | None = None) -> Sequential:
    """The mSPRT decision on ``t - c`` (see the module docstring).

    Args:
        metric, control, treatment: names, as reported.
        c, t: the arms' observations, with ``times``.
        alpha: the rule's error rate: with no true difference, the chance of ever
            deciding "better" or "worse" is at most alpha.
        tau: the mixture's standard deviation, in the metric's units.
        looks: the times to evaluate at (data up to and including each); None: up to
            ``MAX_LOOKS`` evenly spaced over the arrivals once both arms hold
            ``MIN_PER_ARM`` observations, and the last arrival.

    Returns:
        The decision; "not yet known" until the always-valid p-value is below alpha.
    """
    if c.times is None or t.times is None:
        raise ValueError("the sequential rule needs arrival times")  # an internal misuse
    evaluated: list[Look] = []
    p, low, high = 1.0, -math.inf, math.inf
    enough = len(c) >= MIN_PER_ARM and len(t) >= MIN_PER_ARM
    for time in (_look_times(c, t, looks) if enough else []):
        ec, et = estimate(_upto(c, time)), estimate(_upto(t, time))
        if min(ec.n, et.n) < MIN_PER_ARM or ec.variance is None or et.variance is None:
            continue
        assert ec.mean is not None and et.mean is not None
        v = ec.variance + et.variance
        if v <= 0:
            continue
        e = et.mean - ec.mean
        w = cs_half_width(v, alpha, tau)
        look = Look(time, ec.n + et.n, e, e - w, e + w, msprt_p_value(e, v, tau))
        evaluated.append(look)
        p, low, high = min(p, look.p_value), max(low, look.low), min(high, look.high)
    ec, et = estimate(c), estimate(t)
    now = None if ec.mean is None or et.mean is None else et.mean - ec.mean
    decision: Decision = "not yet known"
    if p < alpha:  # some look's interval excluded 0: its side decides (the intersection's too)
        strongest = min(evaluated, key=lambda x: x.p_value)
        decision = "better" if strongest.estimate > 0 else "worse"
    needed = None
    v_now = None if ec.variance is None or et.variance is None else ec.variance + et.variance
    if decision == "not yet known" and now is not None and v_now:
        needed = observations_needed(now, v_now, ec.n + et.n, alpha, tau)
        if needed is not None:  # and the sequence must have started: MIN_PER_ARM in each arm
            short = max(0, MIN_PER_ARM - ec.n) + max(0, MIN_PER_ARM - et.n)
            needed = max(needed, ec.n + et.n + short)
    if not evaluated:
        return Sequential(metric, control, treatment, alpha, tau, ec.n + et.n, now, None, None,
                          1.0, decision, needed, [])
    return Sequential(metric, control, treatment, alpha, tau, ec.n + et.n, now, low, high,
                      p, decision, needed, evaluated)
