"""The data gate's deterministic split of a file into named parts.

(The trainer's quick train/validation hold-out is ``tunelab.data.load.holdout_split``.)
``split_rows`` is the data gate's split: any number of named parts by ratio, stratified by a label
(each class within one row of its share in every part), with rows that must stay
together (one group, one near-duplicate cluster, an augmented row and its source) kept
in one part, and augmented rows only ever in the first (training) part. ``split_file``
runs it on a file and writes the parts and a manifest (row counts, class counts and
sha256 of every file). This module knows nothing of models or training formats.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tunelab.data.table import (
    AUGMENTED,
    AUGMENTED_FROM,
    check_suffix,
    label_text,
    read_table,
    require_columns,
    row_text,
    text_columns,
    write_rows,
)
from tunelab.errors import DataError
from tunelab.files import sha256_file, write_json_atomic
from tunelab.gate.dedup import DEFAULT_THRESHOLD, find_exact_duplicates, find_near_duplicates

DEFAULT_NAMES = ("train", "validation", "test")


def parse_ratios(text: str | Sequence[float]) -> list[float]:
    """``"0.8,0.1,0.1"`` (or a list) as ratios: two or more, each > 0, summing to 1.

    Raises:
        DataError: a ratio is not a positive number, or they do not sum to 1.
    """
    parts = list(text) if not isinstance(text, str) else text.split(",")
    try:
        ratios = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise DataError(f"--ratios {text!r}: every ratio must be a number",
                        hint="e.g. --ratios 0.8,0.1,0.1") from None
    if len(ratios) < 2 or any(not math.isfinite(r) or r <= 0 for r in ratios) \
            or abs(sum(ratios) - 1) > 1e-6:
        raise DataError(f"--ratios {text!r}: need two or more positive ratios that sum to 1 "
                        f"(they sum to {sum(ratios):g})", hint="e.g. --ratios 0.8,0.1,0.1")
    return ratios


def class_quotas(count: int, ratios: Sequence[float]) -> list[int]:
    """Rows of one class per part: ``count * ratio`` rounded by largest remainder.

    Each quota is within one row of its exact share and they sum to ``count``; ties go
    to the earlier part.
    """
    shares = [count * r for r in ratios]
    quotas = [math.floor(s) for s in shares]
    order = sorted(range(len(ratios)), key=lambda s: (-(shares[s] - quotas[s]), s))
    for s in order[:count - sum(quotas)]:
        quotas[s] += 1
    return quotas


def split_rows(n: int, ratios: Sequence[float], seed: int,
               strata: Sequence[str] | None = None,
               groups: Sequence[object | None] | None = None,
               together: Sequence[Sequence[int]] = (),
               train_only: Sequence[bool] | None = None) -> list[int]:
    """Assign each of ``n`` rows to a part.

    Rows that must share a part form units. Units of several rows are placed first,
    largest first, each where it overfills its classes' quotas least; single rows then
    fill each class's remaining quotas in seeded random order. So with single rows only
    every class is within one row of its share in every part; a unit that cannot fit
    may push its classes further (``split_file`` reports the largest deviation).

    Args:
        n: the number of rows.
        ratios: the share of each part (see ``parse_ratios``).
        seed: the same seed and inputs give the same assignment.
        strata: a class per row to stratify by; ``None``: one class.
        groups: a group key per row; rows with the same key share a part (``None``
            keys group nothing).
        together: clusters of row indices that share a part (e.g. near duplicates).
        train_only: rows that may only go to part 0 (augmented rows); their units too.

    Returns:
        The part index of every row.
    """
    units = _units(n, groups, together)
    strata = list(strata) if strata is not None else [""] * n
    quotas = {c: class_quotas(k, ratios) for c, k in sorted(Counter(strata).items())}
    rng = random.Random(f"tunelab.split:{seed}")
    rng.shuffle(units)
    forced = [u for u in units if train_only and any(train_only[i] for i in u)]
    rest = [u for u in units if not (train_only and any(train_only[i] for i in u))]
    big = sorted((u for u in rest if len(u) > 1), key=len, reverse=True)
    assign = [-1] * n
    for unit in forced:
        _place(unit, 0, assign, strata, quotas)
    for unit in big:
        need = Counter(strata[i] for i in unit)

        def cost(s: int, need=need) -> tuple:
            over = sum(max(0, k - quotas[c][s]) for c, k in need.items())
            return over, -sum(quotas[c][s] for c in need), s

        _place(unit, min(range(len(ratios)), key=cost), assign, strata, quotas)
    singles: dict[str, list[int]] = {}
    for unit in rest:
        if len(unit) == 1:
            singles.setdefault(strata[unit[0]], []).append(unit[0])
    for c, rows in singles.items():
        pos = 0
        for s in range(len(ratios)):
            take = max(0, quotas[c][s])
            for i in rows[pos:pos + take]:
                assign[i] = s
            pos += take
        for i in rows[pos:]:  # only when every quota of the class is spent
            assign[i] = 0
    return assign


def _place(unit: list[int], s: int, assign: list[int], strata: list[str],
           quotas: dict[str, list[int]]) -> None:
    for i in unit:
        assign[i] = s
        quotas[strata[i]][s] -= 1


def _units(n: int, groups, together) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(members) -> None:
        members = list(members)
        for m in members[1:]:
            a, b = find(members[0]), find(m)
            if a != b:
                parent[max(a, b)] = min(a, b)

    if groups is not None:
        by_key: dict[object, list[int]] = {}
        for i, key in enumerate(groups):
            if key is not None and key != "":
                by_key.setdefault(key, []).append(i)
        for members in by_key.values():
            join(members)
    for cluster in together:
        join(cluster)
    units: dict[int, list[int]] = {}
    for i in range(n):
        units.setdefault(find(i), []).append(i)
    return list(units.values())


def split_names(count: int, names: Sequence[str] | None = None) -> list[str]:
    """The part names: given, or train/validation[/test], or part_1..part_k.

    Raises:
        DataError: the number of names differs from the number of ratios, or they repeat.
    """
    if names is None:
        return list(DEFAULT_NAMES[:count]) if count <= 3 else [f"part_{k + 1}"
                                                             for k in range(count)]
    names = list(names)
    if len(names) != count or len(set(names)) != count or not all(names):
        raise DataError(f"--names {','.join(names)}: need {count} distinct names, one per ratio",
                        hint="e.g. --names train,validation,test")
    return names


def split_file(input: str | Path, ratios: Sequence[float], seed: int,
               out_dir: str | Path | None = None, names: Sequence[str] | None = None,
               stratify: str | None = None, group: str | None = None,
               fields: list[str] | None = None,
               near_threshold: float | None = DEFAULT_THRESHOLD) -> dict:
    """Split a data file into part files and write a manifest.

    Files are ``STEM.NAME.SUFFIX`` and the manifest ``STEM.split.json`` in ``out_dir``.

    Args:
        input: the data file; never written.
        ratios: the share of each part.
        seed: the same seed and file give the same parts.
        out_dir: where the parts go; default the input's folder.
        names: the part names; see ``split_names``.
        stratify: a column whose classes keep their proportions in every part.
        group: a column whose equal values stay in one part.
        fields: the columns compared for duplicates; default every column but
            ``stratify``, ``group`` and the augmentation tags.
        near_threshold: near duplicates at this 5-gram Jaccard stay in one part;
            ``None`` keeps only exact duplicates together.

    Returns:
        The manifest (also written).

    Raises:
        DataError: bad ratios or names, a missing column, or an unwritable output.
    """
    names = split_names(len(ratios), names)
    table = read_table(input)
    require_columns(table, [c for c in (stratify, group) if c], "column")
    cols = text_columns(table, fields, [c for c in (stratify, group) if c])
    texts = [row_text(r, cols) for r in table.rows]
    together = (find_near_duplicates(texts, near_threshold) if near_threshold
                else find_exact_duplicates(texts))
    together = together + _augmented_links(table)
    strata = [label_text(r.get(stratify)) for r in table.rows] if stratify else None
    groups = [label_text(r.get(group)) or None for r in table.rows] if group else None
    train_only = [bool(r.get(AUGMENTED)) for r in table.rows]
    assign = split_rows(len(table), ratios, seed, strata, groups, together, train_only)
    folder = Path(out_dir) if out_dir else Path(input).parent
    src = Path(input)
    check_suffix(src)
    parts = {}
    for s, name in enumerate(names):
        path = folder / f"{src.stem}.{name}{src.suffix}"
        rows = [r for r, a in zip(table.rows, assign, strict=True) if a == s]
        write_rows(path, rows, table.columns)
        parts[name] = {"path": str(path), "rows": len(rows), "sha256": sha256_file(path)}
    manifest = _manifest(input, ratios, seed, names, stratify, group, cols, near_threshold,
                         table, assign, strata, together, train_only, parts)
    write_json_atomic(folder / f"{src.stem}.split.json", manifest, error=DataError)
    return manifest


def _augmented_links(table) -> list[list[int]]:
    """An augmented row and the row it was made from stay in one part."""
    index = {line: i for i, line in enumerate(table.lines)}
    links = []
    for i, row in enumerate(table.rows):
        source = row.get(AUGMENTED_FROM)
        if row.get(AUGMENTED) and source not in (None, ""):
            try:
                j = index.get(int(source))
            except (TypeError, ValueError):
                j = None
            if j is not None:
                links.append([j, i])
    return links


def _manifest(input, ratios, seed, names, stratify, group, cols, near_threshold, table,
              assign, strata, together, train_only, parts) -> dict:
    n = len(table)
    classes = sorted(set(strata)) if strata else []
    by_class, deviation = {}, 0.0
    for s, name in enumerate(names):
        if strata:
            counts = Counter(c for c, a in zip(strata, assign, strict=True) if a == s)
            by_class[name] = {c: counts.get(c, 0) for c in classes}
            totals = Counter(strata)
            deviation = max([deviation] + [abs(counts.get(c, 0) - totals[c] * ratios[s])
                                           for c in classes])
        else:
            deviation = max(deviation, abs(parts[name]["rows"] - n * ratios[s]))
    return {
        "input": str(input), "input_sha256": sha256_file(input), "rows": n, "seed": seed,
        "ratios": dict(zip(names, ratios, strict=True)), "stratify": stratify,
        "group": group, "compared_fields": cols, "near_threshold": near_threshold,
        "clusters_kept_together": sum(1 for c in together if len(c) > 1),
        "augmented_rows": sum(train_only), "parts": parts,
        "class_counts": by_class or None,
        "max_deviation_rows": round(deviation, 4),
    }
