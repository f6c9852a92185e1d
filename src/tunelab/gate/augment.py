"""Augment a table: paraphrases from a model, and word-level noise (dropout, swap).

Each new row is a copy of its source row with one text field changed, tagged with
``augmented`` (the method) and ``augmented_from`` (the source row's line), and placed
right after its source. ``split`` sends tagged rows, and the rows they came from, only
to the training part, so an augmented row never reaches validation or test. A new text
equal to its source's, to another new text of the same row, or empty is not added; the
counts of such skips are reported. This module never loads a model: paraphrasing takes
a ``paraphrase(texts) -> texts`` function (``tunelab.recipes.data_ops`` builds one).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from tunelab.data.table import (
    AUGMENTED,
    AUGMENTED_FROM,
    check_suffix,
    read_table,
    refuse_overwrite_input,
    require_columns,
    write_rows,
)
from tunelab.errors import DataError
from tunelab.files import sha256_file, write_json_atomic

METHODS = ("paraphrase", "dropout", "swap")
Paraphrase = Callable[[list[str]], list[str]]

# The paraphrase method's sampling defaults (the model itself is the schema's default).
PARAPHRASE_MAX_NEW_TOKENS = 96  # a paraphrase is about as long as its text: short rows
PARAPHRASE_TEMPERATURE = 0.7  # enough variety between copies, still on topic



def word_dropout(text: str, p: float, rng: random.Random) -> str:
    """Drop each word with probability ``p``, keeping at least one; words join with spaces."""
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    if not kept and words:
        kept = [rng.choice(words)]
    return " ".join(kept)


def word_swap(text: str, p: float, rng: random.Random) -> str:
    """Swap neighbouring words ``max(1, round(p * words))`` times; words join with spaces."""
    words = text.split()
    if len(words) < 2:
        return " ".join(words)
    for _ in range(max(1, round(p * len(words)))):
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``paraphrase,dropout,swap`` (any subset, in that order of listing).

    Raises:
        DataError: an unknown method name, or none.
    """
    names = [m.strip() for m in (text.split(",") if isinstance(text, str) else text)]
    names = [m for m in names if m]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise DataError(f"--methods {text!r}: unknown or no method(s) {', '.join(bad)}",
                        hint=f"use some of {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def augment_rows(rows: list[dict], lines: list[int], field: str, methods: Sequence[str],
                 copies: int = 1, p: float = 0.1, seed: int = 0,
                 paraphrase: Paraphrase | None = None) -> tuple[list[dict], dict]:
    """Add augmented copies of rows after their sources.

    Args:
        rows: the rows (not modified).
        lines: each row's line in the input, written into ``augmented_from``.
        field: the text column to change; every row to augment must hold a string.
        methods: some of ``METHODS``.
        copies: new rows per method and source row.
        p: the word dropout probability, and the share of words swapped.
        seed: the same seed gives the same noise.
        paraphrase: required for ``paraphrase``: texts in, one paraphrase per text out.

    Returns:
        ``(rows, stats)``: the sources with their new rows, and per method ``added``,
        ``unchanged``, ``duplicate`` and ``empty`` counts plus ``already_augmented`` (rows
        that are themselves augmented are not augmented again).

    Raises:
        DataError: a bad method, ``copies`` or ``p``; ``paraphrase`` is missing or returns
            the wrong number of texts; or a row's field is not a string.
    """
    methods = parse_methods(methods)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise DataError(f"--copies {copies!r} must be a positive integer")
    if not 0 < p < 1:
        raise DataError(f"-p {p!r} must be in (0, 1)", hint="0.1 changes about one word in ten")
    if "paraphrase" in methods and paraphrase is None:
        raise DataError("paraphrasing needs a model", hint="run it through `tunelab data "
                        "augment`, which loads one, or pass paraphrase=")
    bad = [f"line {line} {field}: expected a string, got {type(r.get(field)).__name__}"
           for r, line in zip(rows, lines, strict=True)
           if not r.get(AUGMENTED) and not isinstance(r.get(field), str)]
    if bad:
        raise DataError(f"{len(bad)} row(s) have no text in {field!r} to augment", findings=bad,
                        hint="pick a text column with --field")
    sources = [i for i, r in enumerate(rows) if not r.get(AUGMENTED)]
    texts = {m: _new_texts(m, [rows[i][field] for i in sources], copies, p, seed, paraphrase)
             for m in methods}
    stats = {m: Counter(added=0, unchanged=0, duplicate=0, empty=0) for m in methods}
    out: list[dict] = []
    made: dict[int, list[dict]] = {}
    for k, i in enumerate(sources):
        original = rows[i][field]
        seen = {original.strip()}
        for m in methods:
            for c in range(copies):
                new = texts[m][k * copies + c]
                why = ("empty" if not new.strip() else "unchanged" if new.strip() == original.strip()
                       else "duplicate" if new.strip() in seen else "added")
                stats[m][why] += 1
                if why == "added":
                    seen.add(new.strip())
                    made.setdefault(i, []).append({**rows[i], field: new, AUGMENTED: m,
                                                   AUGMENTED_FROM: lines[i]})
    for i, row in enumerate(rows):
        out.append(row)
        out.extend(made.get(i, []))
    summary: dict[str, dict[str, int] | int] = {m: dict(s) for m, s in stats.items()}
    summary["already_augmented"] = len(rows) - len(sources)
    return out, summary


def _new_texts(method: str, texts: list[str], copies: int, p: float, seed: int,
               paraphrase: Paraphrase | None) -> list[str]:
    """``copies`` new texts per text, grouped by text."""
    inputs = [t for t in texts for _ in range(copies)]
    if method == "paraphrase":
        assert paraphrase is not None  # augment_rows refuses this method without one
        got = list(paraphrase(inputs)) if inputs else []
        if len(got) != len(inputs):
            raise DataError(f"the paraphraser returned {len(got)} texts for {len(inputs)}",
                            hint="it must return one paraphrase per text, in order")
        return [g if isinstance(g, str) else "" for g in got]
    rng = random.Random(f"tunelab.augment:{seed}:{method}")
    noise = word_dropout if method == "dropout" else word_swap
    return [noise(t, p, rng) for t in inputs]


def augment_file(input: str | Path, output: str | Path, field: str,
                 methods: Sequence[str] = ("dropout", "swap"), copies: int = 1,
                 p: float = 0.1, seed: int = 0, paraphrase: Paraphrase | None = None,
                 extra: dict | None = None) -> dict:
    """Augment a data file into a new file and write ``OUTSTEM.augment.json`` beside it.

    Args:
        input: the data file; never written.
        output: the augmented file (its suffix picks the format).
        field: the text column to change.
        methods, copies, p, seed, paraphrase: as for ``augment_rows``.
        extra: more entries for the manifest (e.g. the paraphrasing model).

    Returns:
        The manifest: input and output with sha256, rows before and after, the
        settings, and the per-method counts.

    Raises:
        DataError: as for ``augment_rows``, a missing column, or an unwritable output.
    """
    out = Path(output)
    manifest_path = out.with_name(out.stem + ".augment.json")
    refuse_overwrite_input(out, [input])
    refuse_overwrite_input(manifest_path, [input])
    check_suffix(out)
    table = read_table(input)
    require_columns(table, [field], "--field")
    rows, stats = augment_rows(table.rows, table.lines, field, methods, copies, p, seed,
                               paraphrase)
    columns = list(dict.fromkeys([*table.columns, AUGMENTED, AUGMENTED_FROM]))
    write_rows(out, rows, columns)
    manifest = {"input": str(input), "input_sha256": sha256_file(input), "output": str(out),
                "output_sha256": sha256_file(out), "field": field,
                "methods": parse_methods(methods), "copies": copies, "p": p, "seed": seed,
                "rows_in": len(table), "rows_out": len(rows), "counts": stats, **(extra or {})}
    write_json_atomic(manifest_path, manifest, error=DataError)
    return manifest
