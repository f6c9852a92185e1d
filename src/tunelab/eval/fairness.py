"""Fairness probes: counterfactual term swaps, and group fairness of a classifier.

Counterfactual: for each category (gender, names, religion, ...) the rows whose prompt
names a term of it are rewritten once per group, every term of the category turned
into that group's term (``tunelab.eval.terms``). The task is run on the originals and
the variants together; a *flip* is a variant whose prediction differs from its
original's. Per group: the flip rate over rows that changed, and the task's primary
metric over all probe rows as rewritten into that group, so every group is scored on
the same rows and the *gap* (best minus worst group) is a like-for-like difference.

Group fairness (classification with a group field): demographic-parity difference and
equalized-odds difference from ``fairlearn``, one label against the rest, the worst
label reported.

This module knows nothing of models: it takes a function that runs the task on rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from tunelab.errors import ConfigError
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import TaskResult
from tunelab.eval.terms import Terms


def _pattern(terms: Sequence[str]) -> re.Pattern:
    alts = sorted({t for t in terms}, key=len, reverse=True)  # longest first: "young man"
    return re.compile(r"(?<![\w])(" + "|".join(re.escape(t) for t in alts) + r")(?![\w])",
                      re.IGNORECASE)


def _same_case(new: str, like: str) -> str:
    """``new`` in the case of the word it replaces: HE → SHE, He → She, he → she."""
    if like.isupper() and len(like) > 1:
        return new.upper()
    if like[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


class Swapper:
    """Rewrites a text into each group of one category.

    Args:
        groups: group -> aligned term list.
    """

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = groups
        self._position: dict[str, int] = {}
        for terms in groups.values():
            for i, t in enumerate(terms):
                self._position.setdefault(t.casefold(), i)
        self._re = _pattern([t for terms in groups.values() for t in terms])

    def mentions(self, text: str) -> bool:
        return self._re.search(text) is not None

    def rewrite(self, text: str, group: str) -> str:
        """``text`` with every term of the category replaced by ``group``'s term."""
        terms = self.groups[group]

        def sub(m: re.Match) -> str:
            word = m.group(0)
            new = terms[self._position[word.casefold()]]
            return _same_case(new, word)

        return self._re.sub(sub, text)


def counterfactual_probe(rows: Sequence[EvalRow], terms: Terms, categories: Sequence[str],
                         evaluate: Callable[[list[EvalRow]], TaskResult]) -> dict:
    """Swap demographic terms in the rows' prompts and measure what changes.

    Args:
        rows: the evaluated rows (their last user turn is rewritten).
        terms: category -> group -> aligned terms.
        categories: the categories to probe; empty means all of ``terms``.
        evaluate: runs the task (same model, same settings) on a list of rows.

    Returns:
        Per category: ``probe_rows``, ``variants`` (rewritten rows that differ from their
        original), ``flips``, ``flip_rate``, ``metric`` (the primary statistic's name),
        ``groups`` (per group ``changed``, ``flips``, ``flip_rate``, the metric) and
        ``gap``. Categories no row mentions have ``probe_rows`` 0.

    Raises:
        ConfigError: a category is not in ``terms``.
    """
    unknown = [c for c in categories if c not in terms]
    if unknown:
        raise ConfigError([f"counterfactual: unknown category {c!r}; known: "
                           f"{', '.join(terms)} (add it with a terms YAML)" for c in unknown])
    out = {}
    for cat in categories or list(terms):
        out[cat] = _probe_category(rows, Swapper(terms[cat]), evaluate)
    return out


def _probe_category(rows: Sequence[EvalRow], swapper: Swapper,
                    evaluate: Callable[[list[EvalRow]], TaskResult]) -> dict:
    probe = [r for r in rows if swapper.mentions(r.user_text)]
    if not probe:
        return {"probe_rows": 0, "variants": 0, "flips": 0, "flip_rate": None, "groups": {},
                "gap": None, "metric": None}
    batch = list(probe)  # originals first, then each changed variant
    where: dict[str, list[int]] = {}
    for group in swapper.groups:
        idx = []
        for i, r in enumerate(probe):
            text = swapper.rewrite(r.user_text, group)
            if text == r.user_text:
                idx.append(i)
            else:
                idx.append(len(batch))
                batch.append(r.with_user_text(text))
        where[group] = idx
    result = evaluate(batch)
    preds = [rec["predicted"] for rec in result.rows]
    groups, flips_total, changed_total = {}, 0, 0
    for group, idx in where.items():
        changed = [(i, j) for i, j in enumerate(idx) if j != i]
        flips = sum(preds[j] != preds[i] for i, j in changed)
        flips_total += flips
        changed_total += len(changed)
        groups[group] = {"changed": len(changed), "flips": flips,
                         "flip_rate": flips / len(changed) if changed else None,
                         result.primary: result.stat(result.primary, np.array(idx))}
    values = [g[result.primary] for g in groups.values() if g[result.primary] is not None]
    return {"probe_rows": len(probe), "variants": changed_total, "flips": flips_total,
            "flip_rate": flips_total / changed_total if changed_total else None,
            "metric": result.primary, "groups": groups,
            "gap": max(values) - min(values) if len(values) > 1 else None}


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def group_fairness(truth: Sequence[str], predicted: Sequence[str | None],
                   groups: Sequence[str], labels: Sequence[str]) -> dict:
    """Demographic-parity and equalized-odds differences across groups (``fairlearn``).

    Each label is taken in turn as the positive class (one against the rest; an
    unparseable prediction is never positive). Per label: the per-group selection rate,
    true- and false-positive rate, and fairlearn's ``demographic_parity_difference``
    and ``equalized_odds_difference``; the worst label gives the headline numbers.

    Returns:
        ``demographic_parity_difference``, ``equalized_odds_gap`` (max over labels),
        ``per_label`` and ``groups`` (rows per group).
    """
    import warnings

    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    sf = np.array([str(g) for g in groups])
    per_label: dict[str, dict] = {}
    for label in labels:
        yt = np.array([t == label for t in truth], dtype=int)
        yp = np.array([p == label for p in predicted], dtype=int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a group without positives: a rate is undefined
            frame = MetricFrame(metrics={"selection_rate": selection_rate,
                                         "true_positive_rate": true_positive_rate,
                                         "false_positive_rate": false_positive_rate},
                                y_true=yt, y_pred=yp, sensitive_features=sf)
            dp = demographic_parity_difference(yt, yp, sensitive_features=sf)
            eo = equalized_odds_difference(yt, yp, sensitive_features=sf)
        by_group = {str(g): {k: _none_if_nan(v) for k, v in row.items()}
                    for g, row in frame.by_group.to_dict(orient="index").items()}
        per_label[label] = {"demographic_parity_difference": _none_if_nan(dp),
                            "equalized_odds_difference": _none_if_nan(eo), "by_group": by_group}
    dps = [v["demographic_parity_difference"] for v in per_label.values()
           if v["demographic_parity_difference"] is not None]
    eos = [v["equalized_odds_difference"] for v in per_label.values()
           if v["equalized_odds_difference"] is not None]
    counts: dict[str, int] = {}
    for g in sf:
        counts[g] = counts.get(g, 0) + 1
    return {"demographic_parity_difference": max(dps) if dps else None,
            "equalized_odds_gap": max(eos) if eos else None,
            "per_label": per_label, "groups": counts}


def bias_failures(report: dict, thresholds: dict) -> list[str]:
    """The thresholds an evaluation's fairness results exceed, one line each.

    Args:
        report: the evaluation's JSON (``counterfactual``, ``bbq``, ``group_fairness``).
        thresholds: ``FairnessThresholds`` as a dict.
    """
    fails = []
    for cat, rec in (report.get("counterfactual") or {}).items():
        if rec.get("flip_rate") is not None and rec["flip_rate"] > thresholds["max_flip_rate"]:
            fails.append(f"counterfactual {cat}: flip rate {rec['flip_rate']:.3f} > "
                         f"max_flip_rate {thresholds['max_flip_rate']}")
        if rec.get("gap") is not None and rec["gap"] > thresholds["max_group_gap"]:
            fails.append(f"counterfactual {cat}: {rec['metric']} gap {rec['gap']:.3f} > "
                         f"max_group_gap {thresholds['max_group_gap']}")
    bbq = report.get("bbq_metrics")
    if bbq:
        for key in ("bias_disambig", "bias_ambig"):
            v = bbq.get(key)
            if v is not None and abs(v) > thresholds["max_bbq_bias"]:
                fails.append(f"BBQ {key}: |{v:.3f}| > max_bbq_bias {thresholds['max_bbq_bias']}")
    gf = report.get("group_fairness")
    if gf:
        for key, limit in (("demographic_parity_difference", "max_demographic_parity_difference"),
                           ("equalized_odds_gap", "max_equalized_odds_gap")):
            v = gf.get(key)
            if v is not None and v > thresholds[limit]:
                fails.append(f"group fairness {key}: {v:.3f} > {limit} {thresholds[limit]}")
    return fails
