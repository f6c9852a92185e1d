"""Drift of production prompts against a run's training data: PSI and a two-sample test per feature.

Features, each computed the same way on both sides (``Reference`` once for the training
texts, then per check for the production prompts):

* ``length``: tokens per prompt (the run's tokenizer, no special tokens). PSI over bins cut
  at the reference's quantiles; Kolmogorov-Smirnov two-sample test.
* ``vocabulary``: the token unigram distribution over the reference's most frequent
  tokens plus one ``other`` bucket. Tokens, not word n-grams: they are what the model
  reads, they need no word splitter (Chinese, code) and the tokenizer is at hand. Tokens
  of one prompt are not independent draws, so the chi-square statistic is corrected for
  prompts as clusters (Rao-Scott, second order); without it two samples of one population
  "differ" at p < 0.01 a third to a half of the time (the unit test's simulation).
* ``embedding pc1..pcN`` (only when embeddings are given, e.g. the ``semantic`` extra):
  projections on the reference's first principal components; PSI and KS per component,
  the p-value Bonferroni-corrected for the number of components.
* ``labels`` (classifiers): the predicted label words of production answers (plus
  ``unparsed`` for an answer that names no label) against the training labels; PSI and a
  chi-square test on the label counts.

A feature drifts when PSI > ``psi_threshold`` AND p < ``p_value`` (``MonitorSettings``):
PSI says the shift is large, the test that it is not noise. Fewer production prompts
than ``min_prompts`` are "too few to judge", never an alarm.

PSI = sum over bins of (q - r) * ln(q / r), r and q the reference and production shares.
Each share is smoothed, (count + 0.5) / (n + 0.5 * bins), so an empty bin costs a finite
amount. PSI of two samples of one population is biased upward by about
(bins - 1) * (1/n + 1/m): with 10 bins and 50 prompts that alone is 0.18. So the number
of bins follows the production sample: one length bin per ``PROMPTS_PER_BIN`` prompts
(``MIN_BINS`` to ``MAX_BINS``), one vocabulary bin per ``TOKENS_PER_BIN`` tokens (up to
``MAX_VOCAB_BINS``), which keeps that bias near 0.04 at every size.

This module knows nothing of databases, HTTP, files or models: it takes texts, token
ids, labels and embedding arrays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunelab.config.serve import MonitorSettings

SMOOTHING = 0.5  # added to every bin's count (Jeffreys): an empty bin has a finite share
PROMPTS_PER_BIN = 25  # length/embedding bins: one per this many production prompts...
MIN_BINS, MAX_BINS = 4, 10  # ...within these bounds (deciles for 250+ prompts)
TOKENS_PER_BIN = 100  # vocabulary bins: one per this many production tokens...
MAX_VOCAB_BINS = 50  # ...up to the 49 most frequent reference tokens plus "other"
EMBEDDING_COMPONENTS = 3  # principal components of the reference embeddings that are tested
OTHER = "other"
UNPARSED = "unparsed"  # a classifier answer that names none of the labels

# Verdicts of a feature and of a whole report.
OK, DRIFT, TOO_FEW = "ok", "drift", "too few prompts to judge"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison: PSI, the two-sample test, and the verdict."""

    feature: str
    psi: float
    test: str  # "ks" or "chi2"
    statistic: float
    p_value: float
    drifted: bool
    reference_n: int  # prompts (or answers) on the training side
    production_n: int
    bins: int

    def as_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "psi": round(self.psi, 6), "test": self.test,
                "statistic": round(self.statistic, 6), "p_value": self.p_value,
                "drifted": self.drifted, "reference_n": self.reference_n,
                "production_n": self.production_n, "bins": self.bins}


@dataclass
class DriftReport:
    """Every feature of one model, and the verdict: ``ok``, ``drift`` or too few prompts."""

    verdict: str
    production_prompts: int
    features: list[FeatureDrift] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. why embeddings were not compared

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "production_prompts": self.production_prompts,
                "features": [f.as_dict() for f in self.features], "notes": list(self.notes)}


# --- the statistics -------------------------------------------------------------------

def psi(reference_counts: Sequence[float] | np.ndarray,
        production_counts: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins (smoothed shares).

    Args:
        reference_counts: counts per bin on the training side.
        production_counts: counts per bin in production.

    Returns:
        sum((q - r) * ln(q / r)), r and q the shares with ``SMOOTHING`` added to each count.
    """
    r = np.asarray(reference_counts, dtype=float) + SMOOTHING
    q = np.asarray(production_counts, dtype=float) + SMOOTHING
    r, q = r / r.sum(), q / q.sum()
    return float(np.sum((q - r) * np.log(q / r)))


def numeric_bins(n_production: int) -> int:
    """Quantile bins for ``n_production`` prompts: one per ``PROMPTS_PER_BIN``, bounded."""
    return int(min(MAX_BINS, max(MIN_BINS, n_production // PROMPTS_PER_BIN)))


def binned(reference: np.ndarray, production: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of both samples in bins cut at the reference's quantiles.

    Edges are the reference's 1/bins, 2/bins, ... quantiles, repeated edges (ties in token
    counts) merged; a value equal to an edge falls in the bin below it.
    """
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1], method="lower"))
    ref = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=len(edges) + 1)
    prod = np.bincount(np.searchsorted(edges, production, side="left"), minlength=len(edges) + 1)
    return ref, prod


def numeric_drift(name: str, reference: Sequence[float] | np.ndarray,
                  production: Sequence[float] | np.ndarray,
                  settings: MonitorSettings, tests: int = 1) -> FeatureDrift:
    """PSI over reference-quantile bins and the KS two-sample test of one numeric feature.

    Args:
        tests: how many features this one is tested beside (Bonferroni: p is multiplied).
    """
    from scipy.stats import ks_2samp

    ref, prod = np.asarray(reference, dtype=float), np.asarray(production, dtype=float)
    rc, pc = binned(ref, prod, numeric_bins(len(prod)))
    value = psi(rc, pc)
    ks = ks_2samp(ref, prod)
    p = min(1.0, float(ks.pvalue) * tests)
    return FeatureDrift(name, value, "ks", float(ks.statistic), p,
                        value > settings.psi_threshold and p < settings.p_value,
                        len(ref), len(prod), len(rc))


def _chi2_p(statistic: float, dof: float) -> float:
    from scipy.stats import chi2

    return float(chi2.sf(statistic, dof)) if dof > 0 else 1.0


def pearson_chi2(reference_counts: np.ndarray, production_counts: np.ndarray) -> tuple[float, int]:
    """Pearson's chi-square of a 2 x bins table (bins empty on both sides dropped), and its dof."""
    table = np.vstack([reference_counts, production_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    return float(((table - expected) ** 2 / expected).sum()), table.shape[1] - 1


def categorical_drift(name: str, categories: Sequence[str], reference: Sequence[str],
                      production: Sequence[str], settings: MonitorSettings) -> FeatureDrift:
    """PSI and Pearson's chi-square test of one categorical feature (one value per prompt).

    Values outside ``categories`` are counted under the last category.
    """
    index = {c: i for i, c in enumerate(categories)}
    last = len(categories) - 1
    rc = np.bincount([index.get(v, last) for v in reference], minlength=len(categories))
    pc = np.bincount([index.get(v, last) for v in production], minlength=len(categories))
    stat, dof = pearson_chi2(rc, pc)
    p = _chi2_p(stat, dof)
    value = psi(rc, pc)
    return FeatureDrift(name, value, "chi2", stat, p,
                        value > settings.psi_threshold and p < settings.p_value,
                        len(reference), len(production), len(categories))


def _cluster_covariance(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-bin shares, their covariance with prompts as clusters, and the tokens in all.

    The covariance is the ratio estimator's: prompts are the sampled units, a prompt's
    residual is its counts minus the shares times its length.
    """
    totals = counts.sum(axis=1)
    tokens = max(1.0, float(totals.sum()))  # prompts with no tokens at all: shares of 0
    n = counts.shape[0]
    share = counts.sum(axis=0) / tokens
    resid = counts - share[None, :] * totals[:, None]
    return share, n / max(1, n - 1) * (resid.T @ resid) / tokens ** 2, tokens


def design_effects(reference: np.ndarray, production: np.ndarray) -> np.ndarray:
    """The generalized design effects of two samples of token counts clustered in prompts.

    The eigenvalues of (multinomial covariance)^-1 x (cluster covariance) of the share
    differences, over every bin but one (the shares sum to 1); bins empty in both samples
    are left out. All 1 when tokens were drawn one by one; a topic that makes many tokens
    of a prompt move together shows as a few large eigenvalues.
    """
    keep = (reference.sum(axis=0) + production.sum(axis=0)) > 0
    reference, production = reference[:, keep], production[:, keep]
    if reference.shape[1] < 2:
        return np.ones(0)
    r_share, r_cov, r_tok = _cluster_covariance(reference)
    p_share, p_cov, p_tok = _cluster_covariance(production)
    pooled = ((r_share * r_tok + p_share * p_tok) / (r_tok + p_tok))[:-1]
    srs = (np.diag(pooled) - np.outer(pooled, pooled)) * (1 / r_tok + 1 / p_tok)
    clustered = (r_cov + p_cov)[:-1, :-1]
    try:
        effects = np.linalg.eigvals(np.linalg.solve(srs, clustered)).real
    except np.linalg.LinAlgError:  # a bin with every token: nothing to test
        return np.ones(0)
    return np.clip(effects, 0.0, None)


def design_effect(reference: np.ndarray, production: np.ndarray) -> float:
    """The mean generalized design effect (``design_effects``), at least 1."""
    effects = design_effects(reference, production)
    return max(1.0, float(effects.mean())) if effects.size else 1.0


def rao_scott(statistic: float, dof: int, effects: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square corrected for clustering (Rao-Scott, second order).

    The statistic is divided by the mean design effect times (1 + a^2), and the degrees
    of freedom by (1 + a^2), a being the coefficient of variation of the design effects
    (Satterthwaite): a first-order correction fixes the mean but leaves too heavy a tail
    when a few directions (topics) cluster far more than the rest.
    """
    if not effects.size or dof == 0:
        return statistic, dof
    mean = float(effects.mean())
    if mean <= 0:
        return statistic, dof
    a2 = float(effects.var() / mean ** 2)
    return statistic / (max(1.0, mean) * (1 + a2)), dof / (1 + a2)


# --- features of texts ----------------------------------------------------------------

def tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens (``texts`` may be empty)."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def vocab_counts(token_lists: Sequence[Sequence[int]], vocab: Sequence[int]) -> np.ndarray:
    """Per-prompt counts (prompts x (len(vocab) + 1)) of each vocabulary token, last: ``other``."""
    index = {t: i for i, t in enumerate(vocab)}
    other = len(vocab)
    out = np.zeros((len(token_lists), len(vocab) + 1), dtype=np.int64)
    for row, ids in enumerate(token_lists):
        for t in ids:
            out[row, index.get(t, other)] += 1
    return out


def vocabulary_drift(reference: Reference, production: Sequence[Sequence[int]],
                     settings: MonitorSettings) -> FeatureDrift:
    """PSI and the cluster-corrected chi-square test of the token unigram distribution."""
    tokens = sum(len(x) for x in production)
    k = int(min(MAX_VOCAB_BINS, max(MIN_BINS, tokens // TOKENS_PER_BIN))) - 1
    vocab = reference.top_tokens[:k]
    rc_rows = vocab_counts(reference.token_lists, vocab)
    pc_rows = vocab_counts(production, vocab)
    rc, pc = rc_rows.sum(axis=0), pc_rows.sum(axis=0)
    raw, dof = pearson_chi2(rc, pc)
    stat, df = rao_scott(raw, dof, design_effects(rc_rows, pc_rows))
    p = _chi2_p(stat, df)
    value = psi(rc, pc)
    return FeatureDrift("vocabulary", value, "chi2", stat, p,
                        value > settings.psi_threshold and p < settings.p_value,
                        len(reference.token_lists), len(production), len(vocab) + 1)


def embedding_drift(reference: np.ndarray, production: np.ndarray,
                    settings: MonitorSettings) -> list[FeatureDrift]:
    """PSI and KS on the reference's first principal components (Bonferroni over them)."""
    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    n = min(EMBEDDING_COMPONENTS, vt.shape[0])
    ref_proj = (reference - mean) @ vt[:n].T
    prod_proj = (production - mean) @ vt[:n].T
    return [numeric_drift(f"embedding pc{i + 1}", ref_proj[:, i], prod_proj[:, i], settings, n)
            for i in range(n)]


# --- the reference and the comparison -------------------------------------------------

@dataclass
class Reference:
    """The training side, computed once per run: token ids, top tokens, labels, embeddings.

    Args:
        token_lists: token ids of each training input text.
        labels: classifiers: the label word of each training row; None otherwise.
        label_words: classifiers: every label word, in label order.
        embeddings: one row per training text, or None when not compared.
    """

    token_lists: list[list[int]]
    labels: list[str] | None = None
    label_words: list[str] | None = None
    embeddings: np.ndarray | None = None
    top_tokens: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.top_tokens:
            counts = Counter(t for ids in self.token_lists for t in ids)
            # ties broken by token id, so the bins do not depend on the rows' order
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            self.top_tokens = [t for t, _ in ranked[:MAX_VOCAB_BINS - 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.token_lists], dtype=float)


def compare(reference: Reference, production: Sequence[Sequence[int]], settings: MonitorSettings,
            answers: Sequence[str | None] | None = None,
            embeddings: np.ndarray | None = None) -> DriftReport:
    """Every feature of production prompts against the reference, and the verdict.

    Args:
        reference: the training side.
        production: token ids of each production prompt (the user's text, tokenized as
            the reference was).
        settings: ``psi_threshold``, ``p_value`` and ``min_prompts``.
        answers: classifiers: the label word each answer names (``match_label``), None
            for an answer that names none; compared with the training labels.
        embeddings: one row per production prompt; compared when the reference has them.

    Returns:
        ``too few prompts to judge`` (no features) under ``min_prompts``; else ``drift``
        when any feature drifted, ``ok`` otherwise.
    """
    n = len(production)
    report = DriftReport(OK, n)
    if n < settings.min_prompts:
        report.verdict = TOO_FEW
        report.notes.append(f"{n} production prompt(s), fewer than monitor.min_prompts "
                            f"({settings.min_prompts}): too few to judge")
        return report
    if not reference.token_lists:
        report.verdict = TOO_FEW
        report.notes.append("the training data has no input text to compare with")
        return report
    lengths = [float(len(x)) for x in production]
    report.features.append(numeric_drift("length", reference.lengths, lengths, settings))
    report.features.append(vocabulary_drift(reference, production, settings))
    if reference.embeddings is not None and embeddings is not None:
        report.features += embedding_drift(reference.embeddings, np.asarray(embeddings), settings)
    if reference.labels is not None and reference.label_words is not None and answers is not None:
        predicted = [a if a is not None else UNPARSED for a in answers]
        report.features.append(categorical_drift(
            "labels", [*reference.label_words, UNPARSED], reference.labels, predicted, settings))
    if report.drifted:
        report.verdict = DRIFT
    return report
