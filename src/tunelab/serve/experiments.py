"""Choosing an experiment's variant for a unit: a stable hash mapped onto the weights.

``unit_point(experiment, unit)`` is a number in [0, 1) read from the SHA-256 of the
experiment's name and the unit, so it is the same in every process, on every machine
and after every restart, and two experiments split the same users independently.
``pick(point, variants)`` maps a point onto the variants' cumulative weights (weights
are relative; a variant of weight 0 covers no interval, so it gets no new unit).
``choose`` is the two together; ``draw`` picks with a fresh random point (a request
that names no unit, or an experiment whose unit is the request).

The choice only decides a unit's *first* variant: the caller stores it
(``tunelab.db.assignments``) and later reads it back, so a weight change moves nobody.
This module knows nothing of HTTP, the database or the served models.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from tunelab.config.serve import ExperimentSettings, VariantSettings

_POINT_BITS = 64  # bits of the digest read as the point: 2**-64 resolution, far below any weight
_rng = random.SystemRandom()  # per-request draws: no seed shared between processes


def unit_point(experiment: str, unit: str) -> float:
    """A uniform number in [0, 1), fixed for (``experiment``, ``unit``).

    The two names are joined with a NUL, which neither a YAML name nor a header holds in
    practice, so ("ab", "c") and ("a", "bc") differ.
    """
    digest = hashlib.sha256(f"{experiment}\0{unit}".encode()).digest()
    return int.from_bytes(digest[: _POINT_BITS // 8], "big") / 2.0**_POINT_BITS


def pick(point: float, variants: Sequence[VariantSettings]) -> VariantSettings:
    """The variant whose interval of the cumulative weights holds ``point`` (0 <= point < 1).

    Raises:
        ValueError: no variant has a weight above 0 (the config schema refuses that).
    """
    total = sum(v.weight for v in variants)
    if not total > 0:
        raise ValueError("no variant has a weight above 0")
    target = point * total
    upto = 0.0
    for v in variants:
        upto += v.weight
        if v.weight > 0 and target < upto:
            return v
    # point * total rounded up to the total: the last variant that takes units
    return [v for v in variants if v.weight > 0][-1]


def choose(experiment: ExperimentSettings, unit: str) -> VariantSettings:
    """The variant a new ``unit`` gets under the experiment's current weights."""
    return pick(unit_point(experiment.name, unit), experiment.variants)


def draw(experiment: ExperimentSettings) -> VariantSettings:
    """A variant at random under the current weights (nothing to keep it sticky)."""
    return pick(_rng.random(), experiment.variants)
