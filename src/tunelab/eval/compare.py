"""Several models on the same rows: differences with paired-bootstrap confidence intervals.

Paired bootstrap (Koehn, 2004; Efron & Tibshirani): draw row indices with replacement,
compute a statistic for both models on the *same* draw, and take the percentile
interval of the differences. Pairing removes the variance that comes from which rows
were drawn, so the interval is about the models, not the sample. Seeded with numpy's
``default_rng``: the same seed, rows and results give the same interval.

This module knows nothing of models or tasks beyond ``TaskResult.stats``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tunelab.eval.tasks import Stat, TaskResult


def paired_bootstrap(stat_a: Stat, stat_b: Stat, n: int, samples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """The difference ``b - a`` of a statistic, with a percentile confidence interval.

    Args:
        stat_a, stat_b: the statistic of each model as a function of row indices.
        n: rows (both models answered the same ``n`` rows, in the same order).
        samples: bootstrap resamples.
        seed: the resampling seed.
        confidence: the interval's coverage, e.g. 0.95.

    Returns:
        ``a``, ``b``, ``diff`` (on all rows), ``ci_low``, ``ci_high``, ``samples`` (the
        resamples where both values were defined), ``confidence`` and ``significant``
        (the interval excludes 0). Values are None where undefined.
    """
    full = np.arange(n)
    a, b = stat_a(full), stat_b(full)
    out = {"a": a, "b": b, "diff": None if a is None or b is None else b - a,
           "ci_low": None, "ci_high": None, "samples": 0, "confidence": confidence,
           "significant": False}
    if out["diff"] is None or n == 0:
        return out
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(samples):
        idx = rng.integers(0, n, size=n)
        va, vb = stat_a(idx), stat_b(idx)
        if va is not None and vb is not None:
            diffs.append(vb - va)
    if not diffs:
        return out
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.array(diffs), [tail, 100 - tail])
    out.update(ci_low=float(low), ci_high=float(high), samples=len(diffs),
               significant=bool(low > 0 or high < 0))
    return out


def compare_results(results: Sequence[TaskResult], samples: int = 1000, seed: int = 0,
                    confidence: float = 0.95) -> dict:
    """Every model against the first (the baseline), statistic by statistic.

    Args:
        results: one result per model, all of the same task on the same rows.

    Returns:
        ``baseline``, ``models``, and ``differences``: per other model, per statistic,
        the ``paired_bootstrap`` record plus ``better`` (the model's value is better than
        the baseline's, given the statistic's direction).

    Raises:
        ValueError: fewer than two results, or results of different tasks or row counts.
    """
    if len(results) < 2:
        raise ValueError("compare needs two or more models")
    base = results[0]
    for r in results[1:]:
        if r.task != base.task or len(r.rows) != len(base.rows):
            raise ValueError(f"{r.model} ({r.task}, {len(r.rows)} rows) is not comparable with "
                             f"{base.model} ({base.task}, {len(base.rows)} rows)")
    n = len(base.rows)
    differences = {}
    for other in results[1:]:
        per_stat = {}
        for name, stat in base.stats.items():
            rec = paired_bootstrap(stat, other.stats[name], n, samples, seed, confidence)
            lower = name in base.lower_is_better
            rec["better"] = None if rec["diff"] is None else (
                rec["diff"] < 0 if lower else rec["diff"] > 0)
            per_stat[name] = rec
        differences[other.model] = per_stat
    return {"baseline": base.model, "models": [r.model for r in results], "rows": n,
            "samples": samples, "seed": seed, "confidence": confidence,
            "differences": differences}


def format_comparison(comparison: dict) -> str:
    """A side-by-side table: each statistic, each model, and the difference with its CI."""
    base = comparison["baseline"]
    pct = int(round(comparison["confidence"] * 100))
    lines = [f"compared on {comparison['rows']} rows; differences against {base}, "
             f"paired bootstrap {pct}% CI ({comparison['samples']} resamples, seed "
             f"{comparison['seed']})"]
    marked = False
    for model, per_stat in comparison["differences"].items():
        lines.append(f"{'statistic':<20}{base[:22]:>24}{model[:22]:>24}   difference [{pct}% CI]")
        for name, rec in per_stat.items():
            if rec["diff"] is None:
                lines.append(f"{name:<20}{_f(rec['a']):>24}{_f(rec['b']):>24}   n/a")
                continue
            ci = ("" if rec["ci_low"] is None
                  else f" [{rec['ci_low']:+.4f}, {rec['ci_high']:+.4f}]")
            mark = " *" if rec["significant"] else ""
            marked = marked or bool(mark)
            lines.append(f"{name:<20}{_f(rec['a']):>24}{_f(rec['b']):>24}   "
                         f"{rec['diff']:+.4f}{ci}{mark}")
    if marked:  # the legend of the marks; alone it would read as a claim about every row
        lines.append("* the interval excludes 0")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
