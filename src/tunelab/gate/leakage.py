"""Leakage: rows of one split (train, validation, test) that reappear in another.

A held-out row that is also a training row, exactly or nearly, inflates every score
measured on it. This module pairs rows across splits: exact pairs by normalized text,
near pairs by character 5-gram Jaccard (``tunelab.gate.dedup``), and turns the pairs
into findings on the later split's lines. It knows nothing of how the splits were made
or of what a row holds beyond the text it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tunelab.data.findings import ERROR, Finding
from tunelab.data.table import read_table, row_text, text_columns
from tunelab.errors import DataError
from tunelab.gate.dedup import DEFAULT_NUM_PERM, DEFAULT_THRESHOLD, near_pairs, normalize_text


@dataclass(frozen=True)
class Leak:
    """One pair of rows in two different splits.

    Args:
        kind: ``exact`` (equal normalized texts) or ``near``.
        split_a: the name of the earlier split (in the order given).
        row_a: 0-based row index in ``split_a``.
        split_b: the name of the later split.
        row_b: 0-based row index in ``split_b``.
        similarity: 1.0 for exact pairs, the 5-gram Jaccard for near ones.
    """

    kind: str
    split_a: str
    row_a: int
    split_b: str
    row_b: int
    similarity: float


def find_leakage(splits: Sequence[tuple[str, Sequence[str]]], near: bool = True,
                 threshold: float = DEFAULT_THRESHOLD,
                 num_perm: int = DEFAULT_NUM_PERM) -> list[Leak]:
    """Every pair of rows in two different splits whose texts match.

    Args:
        splits: ``(name, texts)`` per split, e.g. train first; names must be distinct.
        near: also look for near duplicates (otherwise exact only).
        threshold: the 5-gram Jaccard at which a pair is a near duplicate.
        num_perm: MinHash permutations (see ``find_near_duplicates``).

    Returns:
        Exact pairs, then near pairs (whose normalized texts differ), each sorted by
        split order and row.

    Raises:
        DataError: ``threshold`` or ``num_perm`` is out of range.
    """
    owner: list[int] = []
    local: list[int] = []
    texts: list[str] = []
    for s, (_, split_texts) in enumerate(splits):
        owner.extend([s] * len(split_texts))
        local.extend(range(len(split_texts)))
        texts.extend(split_texts)
    names = [name for name, _ in splits]
    normalized = [normalize_text(t) for t in texts]
    leaks = _exact(normalized, owner, local, names)
    if near:
        def allow(i: int, j: int) -> bool:
            return owner[i] != owner[j] and normalized[i] != normalized[j]

        for i, j, similarity in near_pairs(texts, allow, threshold, num_perm):
            leaks.append(Leak("near", names[owner[i]], local[i], names[owner[j]], local[j],
                              round(similarity, 4)))
    return leaks


def _exact(normalized: list[str], owner: list[int], local: list[int],
           names: list[str]) -> list[Leak]:
    by_text: dict[str, list[int]] = {}
    for i, text in enumerate(normalized):
        by_text.setdefault(text, []).append(i)
    leaks = []
    for rows in by_text.values():
        if len({owner[i] for i in rows}) < 2:
            continue
        for a, i in enumerate(rows):
            for j in rows[a + 1:]:
                if owner[i] != owner[j]:
                    leaks.append(Leak("exact", names[owner[i]], local[i], names[owner[j]],
                                      local[j], 1.0))
    return sorted(leaks, key=lambda k: (names.index(k.split_a), k.row_a,
                                        names.index(k.split_b), k.row_b))


@dataclass
class LeakageReport:
    """Leakage between data files.

    Args:
        files: the paths in the order given.
        rows: the row count of each file.
        fields: the columns compared, per file.
        leaks: the pairs, with ``split_a``/``split_b`` the file paths.
        lines: per file, the line of each row (to turn row indices into lines).
    """

    files: list[str]
    rows: dict[str, int]
    fields: dict[str, list[str]]
    leaks: list[Leak]
    lines: dict[str, list[int]]

    def findings(self) -> list[Finding]:
        """One error per pair, on the later file's line, naming the earlier row."""
        out = []
        for leak in self.leaks:
            line_a = self.lines[leak.split_a][leak.row_a]
            line_b = self.lines[leak.split_b][leak.row_b]
            what = ("the same text as" if leak.kind == "exact"
                    else f"a near duplicate (similarity {leak.similarity:.2f}) of")
            out.append(Finding(leak.split_b, line_b, None, f"leak_{leak.kind}",
                               f"{what} {leak.split_a}:{line_a}; remove it from one of the "
                               "two files (held-out rows must not be seen in training)", ERROR))
        return out

    def to_json(self) -> dict:
        """The report as JSON-ready data, with lines as well as row indices."""
        pairs = []
        for leak in self.leaks:
            pair = asdict(leak)
            pair["line_a"] = self.lines[leak.split_a][leak.row_a]
            pair["line_b"] = self.lines[leak.split_b][leak.row_b]
            pairs.append(pair)
        leaked = {f: len({p["row_b"] for p in pairs if p["split_b"] == f}) for f in self.files}
        return {"files": self.files, "rows": self.rows, "fields": self.fields,
                "leaked_rows": leaked, "pairs": pairs}


def leakage_in_files(paths: Sequence[str | Path], fields: list[str] | None = None,
                     exclude: Sequence[str] = (), near: bool = True,
                     threshold: float = DEFAULT_THRESHOLD,
                     num_perm: int = DEFAULT_NUM_PERM) -> LeakageReport:
    """Leakage between data files, e.g. train, validation and test.

    Args:
        paths: two or more files; earlier files are the ones later rows are matched to.
        fields: the columns whose text is compared; by default every column except
            ``exclude`` (so a label column does not hide a leak).
        exclude: columns never compared, e.g. the label.
        near: also look for near duplicates.
        threshold: as for ``find_leakage``.
        num_perm: as for ``find_leakage``.

    Returns:
        The report; ``report.findings()`` are its errors.

    Raises:
        DataError: fewer than two distinct files, or a file or column cannot be read.
    """
    names = [str(p) for p in paths]
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"leakage needs two or more distinct files, got {names}",
                        hint="give e.g. train.jsonl validation.jsonl test.jsonl")
    tables = [read_table(p) for p in paths]
    splits, used, lines, rows = [], {}, {}, {}
    for name, table in zip(names, tables, strict=True):
        cols = text_columns(table, fields, exclude)
        used[name], lines[name], rows[name] = cols, table.lines, len(table)
        splits.append((name, [row_text(r, cols) for r in table.rows]))
    leaks = find_leakage(splits, near, threshold, num_perm)
    return LeakageReport(names, rows, used, leaks, lines)
