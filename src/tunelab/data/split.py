"""Deterministic train/validation hold-out (full stratified splitting comes with the data gate)."""

from __future__ import annotations

import random
from typing import TypeVar

T = TypeVar("T")


def holdout_split(rows: list[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Seeded split: (rows kept for training, rows held out); at least one row each side.

    Returns the rows unsplit when ``fraction`` is 0 or there are fewer than 2 rows.
    """
    if fraction <= 0 or len(rows) < 2:
        return list(rows), []
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_val = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
    held = set(idx[:n_val])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
