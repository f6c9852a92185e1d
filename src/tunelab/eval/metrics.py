"""Metric functions on predictions and references, computed by the reference libraries.

Regression metrics come from scikit-learn and SciPy, BLEU and chrF from ``sacrebleu``,
ROUGE-L from Google's ``rouge-score``: nothing here re-implements a published metric,
it only parses answers (numbers, GSM8K's ``#### 72``) and shapes the results as JSON.
The libraries are imported inside the functions, so importing tunelab stays light.

This module knows nothing of models, prompts or files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from tunelab.eval.classify import normalize_answer

# A number as people write it: "-3", "1,234.5", ".5", "$72" (the sign and digits only).
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?![\w])")
_GSM8K_FINAL = re.compile(r"####\s*([^\n]*)")


def find_numbers(text: str) -> list[str]:
    """Every number in ``text`` in order, canonical: ``"$1,200.50 and -3"`` → ``["1200.5", "-3"]``."""
    out = []
    for m in _NUMBER.finditer(text):
        raw = m.group(0).replace(",", "")
        if not raw or raw in ("-", ".", "-."):
            continue
        canonical = canonical_number(raw)
        if canonical is not None:
            out.append(canonical)
    return out


def canonical_number(raw: str) -> str | None:
    """``"72.00"`` → ``"72"``, ``"0.50"`` → ``"0.5"``; None when ``raw`` is not a number."""
    try:
        value = Decimal(raw.replace(",", "").strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def first_number(text: str) -> float | None:
    """The first number in ``text`` as a float, or None (regression answers: "4 out of 5" → 4)."""
    found = find_numbers(text)
    return float(found[0]) if found else None


def last_number(text: str) -> str | None:
    """The last number in ``text``, canonical, or None."""
    found = find_numbers(text)
    return found[-1] if found else None


def gsm8k_answer(text: str) -> str | None:
    """GSM8K's final answer: the number after ``####``, else the last number in the text.

    The ``####`` line is the original format; copies (like the Alpaca-shaped one) end
    with a sentence instead, where the last number is the answer.
    """
    m = _GSM8K_FINAL.search(text)
    if m:
        found = find_numbers(m.group(1))
        if found:
            return found[0]
    return last_number(text)


NORMALIZERS: dict[str, Callable[[str], str | None]] = {
    "exact": normalize_answer,  # casefold, no punctuation, one space
    "gsm8k": gsm8k_answer,
    "last_number": last_number,
    "number": lambda t: next(iter(find_numbers(t)), None),  # the first number
}


def exact_matches(predictions: Sequence[str], references: Sequence[str],
                  normalizer: str = "exact") -> list[bool | None]:
    """Per row: do prediction and reference agree after ``normalizer``?

    Returns:
        True/False per row; None where the prediction yields nothing to compare (no
        number found): such rows count as wrong in ``exact_match`` and are also counted
        as unparseable.

    Raises:
        ValueError: an unknown normalizer, or lengths differ.
    """
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer {normalizer!r} is not one of {', '.join(NORMALIZERS)}")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    norm = NORMALIZERS[normalizer]
    out: list[bool | None] = []
    for p, r in zip(predictions, references, strict=True):
        pn, rn = norm(p), norm(r)
        out.append(None if pn is None else pn == rn)
    return out


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure per row (``rouge-score``, Porter stemming), in [0, 1]."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(r, p)["rougeL"].fmeasure
            for p, r in zip(predictions, references, strict=True)]


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (``sacrebleu`` defaults: 13a tokenizer, exponential smoothing), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (``sacrebleu`` defaults: character 6-grams, beta 2), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def text_metrics(predictions: Sequence[str], references: Sequence[str],
                 normalizer: str = "exact") -> dict:
    """Exact match, ROUGE-L, BLEU and chrF of generated answers against references.

    Returns:
        ``n``, ``exact_match`` (share; unparseable counts as wrong), ``unparseable``,
        ``rouge_l`` (mean F-measure, 0-1), ``bleu`` and ``chrf`` (corpus, 0-100), and the
        per-row lists ``exact`` and ``rouge_l_rows``.
    """
    exact = exact_matches(predictions, references, normalizer)
    rl = rouge_l(predictions, references)
    n = len(predictions)
    return {
        "n": n,
        "normalizer": normalizer,
        "exact_match": sum(bool(x) for x in exact) / n if n else 0.0,
        "unparseable": sum(x is None for x in exact),
        "rouge_l": sum(rl) / n if n else 0.0,
        "bleu": corpus_bleu(predictions, references) if n else 0.0,
        "chrf": corpus_chrf(predictions, references) if n else 0.0,
        "exact": exact,
        "rouge_l_rows": rl,
    }


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    """MAE, RMSE and R² (scikit-learn), Pearson and Spearman correlation (SciPy).

    Args:
        y_true, y_pred: parsed numbers of the same rows (unparseable rows left out).

    Returns:
        ``n``, ``mae``, ``rmse``, ``r2``, ``pearson``, ``spearman``; a value that is
        undefined (fewer than two rows, a constant column) is None.

    Raises:
        ValueError: the lengths differ.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true values but {len(y_pred)} predictions")
    n = len(y_true)
    out: dict = {"n": n, "mae": None, "rmse": None, "r2": None, "pearson": None, "spearman": None}
    if n == 0:
        return out
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    out["mae"] = float(mean_absolute_error(t, p))
    out["rmse"] = math.sqrt(float(mean_squared_error(t, p)))
    if n >= 2 and np.ptp(t) > 0:
        out["r2"] = _finite(r2_score(t, p))
    if n >= 2 and np.ptp(t) > 0 and np.ptp(p) > 0:
        from scipy.stats import pearsonr, spearmanr

        out["pearson"] = _finite(pearsonr(t, p).statistic)
        out["spearman"] = _finite(spearmanr(t, p).statistic)
    return out
