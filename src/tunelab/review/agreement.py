"""Agreement between reviewers: percent agreement, Cohen's kappa, Krippendorff's alpha.

* ``percent_agreement``: per item, the share of rater pairs that gave the same value,
  averaged over the items with two or more values (so an item with three raters counts
  once, like an item with two).
* ``cohen_kappa``: two raters, unweighted; the gate's function (``tunelab.gate.labels``),
  re-exported so that the review app has one place to import agreement from. It equals
  scikit-learn's ``cohen_kappa_score`` and is ``None`` where that one is NaN.
* ``krippendorff_alpha``: any number of raters, missing values allowed, computed from the
  coincidence matrix (Krippendorff 2011, "Computing Krippendorff's alpha-reliability").
  Nominal (equal or not), ordinal (the rank-based metric over the ordered value domain:
  the distance of two values grows with how many pairable values lie between them) and
  interval (squared difference). Units with one value are not pairable and add nothing.
  ``None`` when alpha is undefined: no unit with two values, or the expected disagreement
  is zero (one value throughout the pairable data). Where everyone agrees and more than one
  value is used, alpha is 1.0. The ``krippendorff`` package raises in the first case and
  returns NaN in the second.
* ``project_agreement``: the numbers of one review project, per label field and overall,
  with the items whose answers differ (the adjudication queue's content) and agreement per
  UTC day of each item's last answer.

Choices made in ``project_agreement``:

* A reviewer who answered an item more than once counts with the latest answer only.
* Text values are compared after collapsing whitespace and stripping; a text field that is
  absent from one answer but present in another on the same item counts as ``""`` (no
  correction), as does ``None``. A choice or score field absent from an answer did not
  apply (so did ``None``): it is left out of that field's numbers, but an item where one reviewer gave the
  field and another did not is a disagreement (the absent value shows as ``None``).
* Cohen's kappa uses only items with exactly two answers for the field, the earlier
  answer (by submission time) as the first rater; alpha uses reviewers by name as raters.
  Free text has no categories to correct for chance, so text fields get neither (``None``)
  and only percent agreement.
* Ordinal alpha's value domain is the values seen: values nobody used change nothing in
  the rank metric. Naive ``submitted_at`` times are read as UTC.

This module knows nothing of the database, HTTP or the label schema: it receives the field
levels and answer objects (anything with ``item_id``, ``reviewer``, ``answer`` and
``submitted_at``) and returns plain, JSON-ready values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from itertools import combinations
from typing import Any, Protocol

import numpy as np

from tunelab.gate.labels import cohen_kappa

__all__ = ["FIELD_LEVELS", "Answer", "cohen_kappa", "krippendorff_alpha", "percent_agreement",
           "project_agreement"]

ALPHA_LEVELS = ("nominal", "ordinal", "interval")
FIELD_LEVELS = ("nominal", "ordinal", "text")  # choice, 1-5 score, free text


class Answer(Protocol):
    """One reviewer's submitted answer to one item (``tunelab.db.review.AnswerRecord``)."""

    @property
    def item_id(self) -> Any: ...
    @property
    def reviewer(self) -> str: ...
    @property
    def answer(self) -> Mapping[str, Any]: ...
    @property
    def submitted_at(self) -> datetime: ...


def _missing(value: object) -> bool:
    """``None`` or a float NaN (how numeric reliability data marks a missing value)."""
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def percent_agreement(units: Sequence[Sequence[Hashable | None]]) -> float | None:
    """Pairwise percent agreement, averaged over the items that have two or more values.

    Args:
        units: per item, the values its raters gave (``None`` or NaN: missing).

    Returns:
        The mean over items of (agreeing pairs / pairs), or ``None`` when no item has two
        values.
    """
    shares = []
    for unit in units:
        counts = Counter(v for v in unit if not _missing(v))
        m = sum(counts.values())
        if m >= 2:
            shares.append(sum(c * (c - 1) for c in counts.values()) / (m * (m - 1)))
    return sum(shares) / len(shares) if shares else None


def krippendorff_alpha(reliability: Sequence[Sequence[Hashable | None]] | np.ndarray,
                       level: str = "nominal",
                       value_domain: Sequence[Hashable] | None = None) -> float | None:
    """Krippendorff's alpha of reliability data (raters x units), from the coincidence matrix.

    Args:
        reliability: one row per rater, one column per unit; ``None`` or NaN is missing.
        level: ``"nominal"``, ``"ordinal"`` or ``"interval"`` (numbers only).
        value_domain: the possible values; for ordinal data their order (low to high).
            Default: the distinct values seen, sorted (nominal: in first-seen order).

    Returns:
        Alpha, or ``None`` when undefined (no unit with two values, or a single value in
        all pairable data).

    Raises:
        ValueError: an unknown level, rows of different lengths, a value outside
            ``value_domain``, or values that cannot be ordered (ordinal) or subtracted
            (interval).
    """
    if level not in ALPHA_LEVELS:
        raise ValueError(f"level must be one of {ALPHA_LEVELS}, got {level!r}")
    rows = [list(r) for r in reliability]
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise ValueError(f"every rater needs one value per unit; row lengths {sorted(widths)}")
    seen = list(dict.fromkeys(v for r in rows for v in r if not _missing(v)))
    if value_domain is None:
        try:
            domain = seen if level == "nominal" else sorted(seen)
        except TypeError:
            raise ValueError(f"{level} values must be of one orderable kind, got {seen[:5]}") from None
    else:
        domain = list(dict.fromkeys(value_domain))
        outside = [v for v in seen if v not in set(domain)]
        if outside:
            raise ValueError(f"values outside value_domain: {outside[:5]}")
    index = {v: i for i, v in enumerate(domain)}
    n_units = widths.pop() if widths else 0
    counts = np.zeros((n_units, len(domain)))  # units x values: raters who gave the value
    for r in rows:
        for u, v in enumerate(r):
            if not _missing(v):
                counts[u, index[v]] += 1
    m_u = counts.sum(axis=1)
    pairable = counts[m_u >= 2]
    if len(pairable) == 0:
        return None
    # o_ck = sum over units of (n_uc n_uk - [c == k] n_uc) / (m_u - 1)
    per_unit = pairable[:, :, None] * pairable[:, None, :]
    per_unit -= pairable[:, :, None] * np.eye(len(domain))[None]
    o = (per_unit / (pairable.sum(axis=1) - 1)[:, None, None]).sum(axis=0)
    n_c = o.sum(axis=0)
    n = n_c.sum()
    e = (np.outer(n_c, n_c) - np.diag(n_c)) / (n - 1)
    d = _distances(domain, level, n_c)
    expected = float((e * d).sum())
    if expected == 0:
        return None
    return 1.0 - float((o * d).sum()) / expected


def _distances(domain: list, level: str, n_c: np.ndarray) -> np.ndarray:
    """The squared distance of every pair of domain values (Krippendorff 2011, sec. E)."""
    size = len(domain)
    if level == "nominal":
        return 1.0 - np.eye(size)
    if level == "interval":
        values = np.asarray(domain, dtype=float)
        return (values[:, None] - values[None, :]) ** 2
    # ordinal: (sum of n_g for g from c to k, minus half of n_c and n_k) squared
    cum = np.concatenate([[0.0], np.cumsum(n_c)])
    lo = np.minimum.outer(np.arange(size), np.arange(size))
    hi = np.maximum.outer(np.arange(size), np.arange(size))
    between = cum[hi + 1] - cum[lo]
    return (between - (n_c[:, None] + n_c[None, :]) / 2) ** 2


def _norm_text(value: object) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _utc(when: datetime) -> datetime:
    """Aware UTC time; a naive time is read as UTC (SQLite hands back naive times)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def _item_values(level: str, field: str, answers: list[Answer]) -> dict[str, Any]:
    """Reviewer -> the (normalized) value of one field on one item; reviewers without it left out."""
    if level == "text":
        if not any(field in a.answer for a in answers):
            return {}
        return {a.reviewer: _norm_text(a.answer.get(field)) for a in answers}
    return {a.reviewer: a.answer[field] for a in answers if a.answer.get(field) is not None}


def project_agreement(fields: Mapping[str, str], answers: Iterable[Answer]) -> dict:
    """Agreement of one project's answers, per field and overall, with the disagreements.

    Args:
        fields: field name -> ``"nominal"`` (choice), ``"ordinal"`` (score) or ``"text"``.
        answers: every submitted answer of the project.

    Returns:
        JSON-ready: ``reviewers``, ``fields`` (per field: ``items``, ``percent``,
        ``cohen_kappa``, ``alpha``, ``pairs``: a list of ``{reviewers: [a, b], items,
        percent}``), ``items_compared``, ``items_agreed``, ``items_disagreed``,
        ``disagreements`` (``{item_id, fields: {field: {reviewer: value}}}`` for the
        differing fields, by item id) and ``over_time`` (``{day, items, agreed, percent}``
        per UTC day of an item's last answer, by day).

    Raises:
        ValueError: a field level that is not one of ``FIELD_LEVELS``.
    """
    bad = {f: lvl for f, lvl in fields.items() if lvl not in FIELD_LEVELS}
    if bad:
        raise ValueError(f"field levels must be one of {FIELD_LEVELS}, got {bad}")
    latest: dict[tuple[Any, str], Answer] = {}
    for a in answers:  # a reviewer's later answer to the same item replaces the earlier one
        key = (a.item_id, a.reviewer)
        if key not in latest or _utc(a.submitted_at) >= _utc(latest[key].submitted_at):
            latest[key] = a
    by_item: dict[Any, list[Answer]] = {}
    for a in sorted(latest.values(), key=lambda a: (_utc(a.submitted_at), a.reviewer)):
        by_item.setdefault(a.item_id, []).append(a)
    reviewers = sorted({a.reviewer for a in latest.values()})
    # field -> item -> reviewer -> value, answers in submission order
    values = {f: {item: _item_values(lvl, f, group) for item, group in by_item.items()}
              for f, lvl in fields.items()}
    report: dict = {"reviewers": reviewers,
                    "fields": {f: _field_report(lvl, values[f], reviewers)
                               for f, lvl in fields.items()}}
    compared = {item: group for item, group in by_item.items() if len(group) >= 2}
    disagreements = []
    days: dict[str, list[int]] = {}
    for item in sorted(compared, key=_sort_key):
        group = compared[item]
        differing = {}
        for f in fields:
            got = values[f][item]
            if got and (len(set(got.values())) > 1 or len(got) < len(group)):
                differing[f] = {a.reviewer: got.get(a.reviewer) for a in group}
        if differing:
            disagreements.append({"item_id": item, "fields": differing})
        day = days.setdefault(max(_utc(a.submitted_at) for a in group).date().isoformat(), [0, 0])
        day[0] += 1
        day[1] += not differing
    report.update(items_compared=len(compared),
                  items_agreed=len(compared) - len(disagreements),
                  items_disagreed=len(disagreements),
                  disagreements=disagreements,
                  over_time=[{"day": d, "items": n, "agreed": k, "percent": k / n}
                             for d, (n, k) in sorted(days.items())])
    return report


def _sort_key(item: Any) -> tuple[str, Any]:
    return (type(item).__name__, item)  # ids of one type sort naturally; mixed types do not fail


def _field_report(level: str, per_item: dict[Any, dict[str, Any]], reviewers: list[str]) -> dict:
    """One field's numbers from item -> reviewer -> value (in submission order)."""
    rated = [got for got in per_item.values() if len(got) >= 2]
    two = [list(got.values()) for got in rated if len(got) == 2]
    kappa = alpha = None
    if level != "text":
        if two:
            kappa = cohen_kappa([v[0] for v in two], [v[1] for v in two])
        matrix = [[got.get(r) for got in per_item.values()] for r in reviewers]
        alpha = krippendorff_alpha(matrix, level) if rated else None
    pairs = []
    for r1, r2 in combinations(reviewers, 2):
        common = [(got[r1], got[r2]) for got in rated if r1 in got and r2 in got]
        if common:
            pairs.append({"reviewers": [r1, r2], "items": len(common),
                          "percent": sum(x == y for x, y in common) / len(common)})
    return {"items": len(rated), "percent": percent_agreement([list(g.values()) for g in rated]),
            "cohen_kappa": kappa, "alpha": alpha, "pairs": pairs}
