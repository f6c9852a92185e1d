"""Per-slice metrics: any metadata field, a length bucket or the label, and the worst slice.

A slice is the rows sharing one value of a field. ``length`` buckets the prompt text by
characters (``<64``, ``64-127``, ...); ``label`` is the reference; any other name is read
from the row's fields (``source``, ``group``, ``category``, ...). Every statistic of the
task is computed on every slice with the same functions as on the whole set.

This module knows nothing of models; it groups rows and calls ``TaskResult.stats``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tunelab.data.table import label_text
from tunelab.errors import DataError
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import TaskResult

MIN_WORST = 5  # rows a slice needs before it can be called the worst (noise below that)
MISSING = "(missing)"


def length_bucket(chars: int, edges: Sequence[int]) -> str:
    """The bucket name of a length: ``<64``, ``64-127``, ..., ``>=512``."""
    lower = 0
    for edge in edges:
        if chars < edge:
            return f"<{edge}" if lower == 0 else f"{lower}-{edge - 1}"
        lower = edge
    return f">={lower}"


def slice_values(rows: Sequence[EvalRow], field: str, edges: Sequence[int]) -> list[str]:
    """Each row's slice under ``field``.

    Raises:
        DataError: no row has the field (a typo, most likely).
    """
    if field == "length":
        return [length_bucket(len(r.user_text), edges) for r in rows]
    if field == "label":
        return [MISSING if r.reference is None else str(r.reference) for r in rows]
    if not any(field in r.meta for r in rows):
        keys = sorted({k for r in rows for k in r.meta})
        raise DataError(f"--slice-by {field!r}: no row has this field",
                        hint=f"fields are: length, label, {', '.join(keys)}")
    return [MISSING if r.meta.get(field) is None else label_text(r.meta.get(field)) for r in rows]


def slice_metrics(result: TaskResult, values: Sequence[str]) -> dict:
    """Every statistic per slice, and the worst slice by the primary statistic.

    Args:
        result: a task result.
        values: the slice of each row (same order as ``result.rows``).

    Returns:
        ``slices``: ``{value: {"n", stat: value, ...}}`` sorted by value; ``worst``:
        ``{"slice", "n", primary: value}`` among slices of at least ``MIN_WORST`` rows
        (all slices when none is that big), or None.
    """
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault(v, []).append(i)
    table: dict[str, dict] = {}  # "n" (int) and each stat (float, or None where undefined)
    for value in sorted(groups):
        idx = np.array(groups[value])
        table[value] = {"n": int(idx.size), **{k: fn(idx) for k, fn in result.stats.items()}}
    primary = result.primary
    lower = primary in result.lower_is_better
    ranked = [(v, m) for v, m in table.items() if m[primary] is not None]
    big = [(v, m) for v, m in ranked if m["n"] >= MIN_WORST] or ranked
    worst = None
    if len(big) > 1 and len({m[primary] for _, m in big}) > 1:  # equal slices: none is worst
        v, m = (max if lower else min)(big, key=lambda x: x[1][primary])
        worst = {"slice": v, "n": m["n"], primary: m[primary], "overall": result.stat(primary)}
    return {"primary": primary, "slices": table, "worst": worst}


def all_slices(result: TaskResult, rows: Sequence[EvalRow], fields: Sequence[str],
               edges: Sequence[int]) -> dict:
    """``slice_metrics`` for each field, keyed by field name."""
    return {f: slice_metrics(result, slice_values(rows, f, edges)) for f in fields}
