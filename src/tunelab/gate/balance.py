"""Balance labels: over- or under-sample rows to a target label distribution.

The target is ``uniform`` or relative shares per label (``pos=2,neg=1`` means two
positive rows per negative one). ``over`` keeps every row and repeats rows of the
smaller classes; ``under`` keeps the smallest class whole and samples the others
down; a total ``size`` samples each class up or down to its share of it. Sampling is
seeded; repeated rows are exact copies placed after their original, and kept rows
keep file order. ``balance_file`` writes the result and a manifest with the counts
before and after. This module knows nothing of models or training formats.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tunelab.data.table import (
    check_suffix,
    label_text,
    read_table,
    refuse_overwrite_input,
    require_columns,
    write_rows,
)
from tunelab.errors import DataError
from tunelab.files import sha256_file, write_json_atomic
from tunelab.gate.split import class_quotas

METHODS = ("over", "under")


def parse_target(text: str) -> dict[str, float] | None:
    """``uniform`` (``None``) or ``LABEL=SHARE,...`` with shares >= 0, not all 0.

    Raises:
        DataError: the text has another shape.
    """
    if text.strip() == "uniform":
        return None
    shares, bad = {}, []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or not name.strip() or not math.isfinite(share) or share < 0:
            bad.append(part)
        else:
            shares[name.strip()] = share
    if bad or not shares or not any(shares.values()):
        raise DataError(f"--target {text!r}: write uniform or LABEL=SHARE,... with shares >= 0",
                        hint="e.g. --target uniform, or --target positive=1,negative=1")
    return shares


def target_counts(counts: dict[str, int], shares: dict[str, float] | None, method: str,
                  size: int | None = None) -> dict[str, int]:
    """How many rows each label gets.

    Args:
        counts: rows per label now.
        shares: relative share per label; ``None`` for uniform.
        method: ``over`` (no label loses rows) or ``under`` (no label gains rows);
            ignored when ``size`` is given.
        size: the total number of rows wanted.

    Returns:
        Rows per label, in the order of ``counts``.

    Raises:
        DataError: labels of the data are missing from the target or the reverse, the
            method is unknown, or ``size`` is not positive.
    """
    shares = shares if shares is not None else dict.fromkeys(counts, 1.0)
    missing = sorted(set(counts) - set(shares))
    absent = sorted(k for k in set(shares) - set(counts) if shares[k] > 0)
    if missing or absent:
        problems = [f"label {k!r} is in the data but not in the target; give it a share "
                    "(0 drops its rows)" for k in missing]
        problems += [f"label {k!r} is in the target but has no rows to sample from"
                     for k in absent]
        raise DataError("the target does not fit the labels of the data", findings=problems,
                        hint=f"the labels are {', '.join(counts)}")
    total_share = sum(shares[k] for k in counts)
    p = {k: shares[k] / total_share for k in counts}
    if size is None:
        if method not in METHODS:
            raise DataError(f"--method {method!r} is not one of {', '.join(METHODS)}")
        ratios = [counts[k] / p[k] for k in counts if p[k] > 0]
        size = math.ceil(max(ratios) - 1e-9) if method == "over" else math.floor(min(ratios) + 1e-9)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"--size {size!r} must be a positive number of rows")
    labels = list(counts)
    quotas = class_quotas(size, [p[k] for k in labels])
    return dict(zip(labels, quotas, strict=True))


def balance_rows(labels: Sequence[str], targets: dict[str, int], seed: int) -> list[int]:
    """Row indices (with repeats) that give each label its target count.

    Args:
        labels: the label of each row.
        targets: rows wanted per label (from ``target_counts``).
        seed: the same seed gives the same rows.

    Returns:
        Indices in file order; a repeated row's copies follow it.
    """
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    picked: list[int] = []
    for k, (label, rows) in enumerate(by_label.items()):
        rng = random.Random(f"tunelab.balance:{seed}:{k}:{label}")
        want = targets.get(label, 0)
        whole, part = divmod(want, len(rows))
        picked += rows * whole + rng.sample(rows, part)
    return sorted(picked)


def balance_file(input: str | Path, output: str | Path, label: str,
                 target: str = "uniform", method: str = "over", seed: int = 0,
                 size: int | None = None, manifest: str | Path | None = None) -> dict:
    """Balance a data file's labels into a new file and write a manifest.

    Args:
        input: the data file; never written.
        output: the balanced file (its suffix picks the format).
        label: the label column.
        target: ``uniform`` or ``LABEL=SHARE,...``.
        method: ``over`` or ``under`` (see ``target_counts``).
        seed: the same seed gives the same rows.
        size: a total row count instead of ``method``.
        manifest: where the manifest goes; default ``OUTSTEM.balance.json`` beside it.

    Returns:
        The manifest: input and output with sha256, label, target shares, method, seed,
        and per label the counts ``before``, ``after``, ``added`` and ``removed``.

    Raises:
        DataError: a bad target, method or size, a missing column, or an unwritable
            output.
    """
    out = Path(output)
    manifest_path = Path(manifest) if manifest else out.with_name(out.stem + ".balance.json")
    refuse_overwrite_input(out, [input])
    refuse_overwrite_input(manifest_path, [input, out])
    check_suffix(out)
    shares = parse_target(target)
    table = read_table(input)
    require_columns(table, [label], "--label")
    labels = [label_text(r.get(label)) for r in table.rows]
    before = dict(sorted(Counter(labels).items()))
    targets = target_counts(before, shares, method, size)
    picked = balance_rows(labels, targets, seed)
    write_rows(out, [table.rows[i] for i in picked], table.columns)
    after = Counter(labels[i] for i in picked)
    counts = {k: {"before": before[k], "after": after.get(k, 0),
                  "added": max(0, after.get(k, 0) - before[k]),
                  "removed": max(0, before[k] - after.get(k, 0))} for k in before}
    result = {"input": str(input), "input_sha256": sha256_file(input), "output": str(out),
              "output_sha256": sha256_file(out), "label": label,
              "target": "uniform" if shares is None else shares,
              "method": "size" if size else method, "size": len(picked), "seed": seed,
              "counts": counts}
    write_json_atomic(manifest_path, result, error=DataError)
    return result
