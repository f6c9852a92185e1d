"""Exact, near and semantic duplicates among texts, as clusters of row indices.

* exact: the same text once normalized (Unicode NFKC, case-folded, whitespace runs made
  one space, ends stripped).
* near: Jaccard similarity of character 5-gram sets at or above a threshold. Candidate
  pairs come from MinHash signatures banded as locality-sensitive hashing; every
  candidate is then checked with the exact Jaccard of the two texts, so a reported pair
  is never a false positive. The bands favour finding pairs: a pair right at the
  threshold is a candidate with probability about 0.9 or more, one 0.05 above it 0.99.
* semantic: cosine similarity of sentence embeddings at or above a threshold; the
  embeddings are computed elsewhere (``tunelab.recipes.data_ops``): this module never
  loads a model.

Signatures are those of ``datasketch.MinHash.bulk`` (its default ``affine32`` scheme and
permutations, fed the same 5-gram hashes), computed for all rows at once with numpy,
and the band/row split is ``datasketch.MinHashLSH``'s optimum for the threshold. The
per-row datasketch objects and index measured 7 s on SST-2's 67,349 rows; this runs
in about a second. ``duplicates_in_file`` applies the finders to a file's chosen columns;
the rest knows nothing of files or fields: it takes texts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunelab.data.findings import WARNING, Finding
from tunelab.data.table import read_table, row_text, text_columns
from tunelab.errors import DataError

DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
DEFAULT_SEMANTIC_THRESHOLD = 0.95
NGRAM = 5  # characters: robust for short texts (a typo changes 5 shingles, not a word's 3)
_SEED = 1  # datasketch's default MinHash seed
_CHUNK = 1 << 16  # shingles per numpy block: 128 perms x 4 bytes x 65k = 32 MiB
_MAX_REPS = 64  # components compared per LSH bucket; only adversarial buckets reach it
_LSH_WEIGHTS = (0.05, 0.95)  # (false candidate, missed pair) for datasketch's band optimum
_MAX_CACHED = 20_000  # 5-gram sets kept for candidate checks (~5 KB each for a sentence)

_WS = re.compile(r"\s+")
# 64-bit odd multipliers for the 5-gram polynomial hash (any distinct odd constants do).
_MULT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                  0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53],
                 dtype=np.uint64)
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35),
           np.uint32(16))


def normalize_text(text: str) -> str:
    """The form texts are compared in: NFKC, case-folded, whitespace runs as one space."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def find_exact_duplicates(texts: Sequence[str]) -> list[list[int]]:
    """Rows whose normalized texts are equal.

    Args:
        texts: one text per row.

    Returns:
        Clusters of row indices (each sorted, size >= 2), ordered by their first row.
    """
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(normalize_text(text), []).append(i)
    return [g for g in groups.values() if len(g) >= 2]


def find_near_duplicates(texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD,
                         num_perm: int = DEFAULT_NUM_PERM) -> list[list[int]]:
    """Rows whose character 5-gram Jaccard similarity reaches ``threshold``.

    Exact duplicates are near duplicates too (similarity 1). Clusters are connected
    components of similar pairs, so two rows of one cluster may be less similar than
    ``threshold`` through a row between them.

    Args:
        texts: one text per row.
        threshold: the Jaccard similarity in (0, 1] at which two rows are duplicates.
        num_perm: MinHash permutations; more finds pairs near the threshold more
            reliably and costs time and memory linearly.

    Returns:
        Clusters of row indices (each sorted, size >= 2), ordered by their first row.

    Raises:
        DataError: ``threshold`` or ``num_perm`` is out of range.
    """
    _check(threshold, num_perm)
    unique, rows_of = _unique(texts)
    uf = _UnionFind(len(unique))
    grams = _GramCache(unique)
    for bucket in _lsh_buckets(unique, threshold, num_perm):
        reps: list[int] = []
        for m in bucket.tolist():
            for rep in reps:
                if uf.find(rep) != uf.find(m) and grams.jaccard(rep, m) >= threshold:
                    uf.union(rep, m)
            roots = {uf.find(r) for r in reps}
            if uf.find(m) not in roots and len(reps) < _MAX_REPS:
                reps.append(m)
    components: dict[int, list[int]] = {}
    for u, rows in enumerate(rows_of):
        components.setdefault(uf.find(u), []).extend(rows)
    return _clusters(components.values())


def near_pairs(texts: Sequence[str], allow: Callable[[int, int], bool],
               threshold: float = DEFAULT_THRESHOLD,
               num_perm: int = DEFAULT_NUM_PERM) -> list[tuple[int, int, float]]:
    """Every candidate pair of rows that ``allow`` accepts and that reaches ``threshold``.

    Used for leakage, where each pair across files matters, not just clusters.

    Args:
        texts: one text per row.
        allow: ``allow(i, j)`` with ``i < j``; pairs it rejects are not checked.
        threshold: as for ``find_near_duplicates``.
        num_perm: as for ``find_near_duplicates``.

    Returns:
        ``(i, j, similarity)`` with ``i < j``, sorted; each pair once.

    Raises:
        DataError: ``threshold`` or ``num_perm`` is out of range.
    """
    _check(threshold, num_perm)
    normalized = [normalize_text(t) for t in texts]
    grams = _GramCache(normalized)
    found: dict[tuple[int, int], float] = {}
    for bucket in _lsh_buckets(normalized, threshold, num_perm):
        members = bucket.tolist()
        for a, i in enumerate(members):
            for j in members[a + 1:]:
                pair = (i, j) if i < j else (j, i)
                if pair in found or not allow(*pair):
                    continue
                similarity = grams.jaccard(i, j)
                if similarity >= threshold:
                    found[pair] = similarity
    return sorted((i, j, s) for (i, j), s in found.items())


def find_semantic_duplicates(embeddings: np.ndarray,
                             threshold: float = DEFAULT_SEMANTIC_THRESHOLD,
                             block: int = 512) -> list[list[int]]:
    """Rows whose embeddings have cosine similarity at or above ``threshold``.

    Args:
        embeddings: ``(rows, dim)`` floats, one per row (normalized here).
        threshold: the cosine similarity in (0, 1] at which two rows are duplicates.
        block: rows compared at a time; memory is ``block x rows`` floats.

    Returns:
        Clusters of row indices (each sorted, size >= 2), ordered by their first row.

    Raises:
        DataError: ``threshold`` is out of range or ``embeddings`` is not 2-D.
    """
    _check(threshold, 1)
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2:
        raise DataError(f"embeddings must be a (rows, dim) array, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.maximum(norms, 1e-12)
    uf = _UnionFind(len(vectors))
    for start in range(0, len(vectors), block):
        sims = vectors[start:start + block] @ vectors.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip((rows + start).tolist(), cols.tolist(), strict=True):
            if r < c:
                uf.union(r, c)
    components: dict[int, list[int]] = {}
    for i in range(len(vectors)):
        components.setdefault(uf.find(i), []).append(i)
    return _clusters(components.values())


@dataclass
class DuplicateReport:
    """Duplicate clusters of one file, by kind (``exact``, ``near``, ``semantic``).

    Args:
        source: the file.
        rows: its row count.
        fields: the columns compared.
        lines: the line of each row.
        clusters: per kind, clusters of row indices.
    """

    source: str
    rows: int
    fields: list[str]
    lines: list[int]
    clusters: dict[str, list[list[int]]] = field(default_factory=dict)

    def findings(self) -> list[Finding]:
        """A warning per row after the first of its cluster (once, by the first kind)."""
        out, reported = [], set()
        for kind, clusters in self.clusters.items():
            for cluster in clusters:
                first = self.lines[cluster[0]]
                for i in cluster[1:]:
                    if i in reported:
                        continue  # an exact duplicate is a near one too: report it once
                    reported.add(i)
                    out.append(Finding(
                        self.source, self.lines[i], None, f"duplicate_{kind}",
                        f"{'an' if kind == 'exact' else 'a'} {kind} duplicate of line {first} "
                        f"(a cluster of {len(cluster)} "
                        "rows); `tunelab data clean` keeps one row per cluster", WARNING))
        return sorted(out, key=lambda f: f.line)

    def to_json(self) -> dict:
        """Clusters as lines, and a count per kind."""
        return {"file": self.source, "rows": self.rows, "fields": self.fields,
                **{kind: {"clusters": len(c), "rows_in_clusters": sum(map(len, c)),
                          "rows_removable": sum(len(x) - 1 for x in c),
                          "lines": [[self.lines[i] for i in x] for x in c]}
                   for kind, c in self.clusters.items()}}


def duplicates_in_file(path: str | Path, fields: list[str] | None = None,
                       exclude: Sequence[str] = (), near: bool = True,
                       threshold: float = DEFAULT_THRESHOLD,
                       num_perm: int = DEFAULT_NUM_PERM) -> DuplicateReport:
    """Exact and near duplicate clusters among the rows of a file.

    Args:
        path: the data file.
        fields: the columns compared; default every column but ``exclude``.
        exclude: columns not compared (e.g. a label, so rows that differ only in their
            label count as duplicates).
        near: also look for near duplicates.
        threshold, num_perm: as for ``find_near_duplicates``.

    Returns:
        The report; add semantic clusters with ``report.clusters["semantic"] = ...``.

    Raises:
        DataError: the file or a column cannot be read, or a setting is out of range.
    """
    table = read_table(path)
    cols = text_columns(table, fields, exclude)
    texts = [row_text(r, cols) for r in table.rows]
    report = DuplicateReport(table.source, len(table), cols, table.lines)
    report.clusters["exact"] = find_exact_duplicates(texts)
    if near:
        report.clusters["near"] = find_near_duplicates(texts, threshold, num_perm)
    return report


def minhash_signatures(texts: Sequence[str], num_perm: int = DEFAULT_NUM_PERM) -> np.ndarray:
    """MinHash signatures of the character 5-gram sets of texts, as ``datasketch`` computes.

    Row ``i`` equals ``MinHash.bulk([shingle_hashes(texts[i])], num_perm=num_perm,
    hashfunc=int)[0].hashvalues``; the texts are taken as they are (normalize first).

    Args:
        texts: the texts.
        num_perm: the number of permutations.

    Returns:
        A ``(len(texts), num_perm)`` ``uint32`` array.
    """
    from datasketch import MinHash

    reference = MinHash(num_perm=num_perm, seed=_SEED)
    if getattr(reference, "scheme", None) != "affine32":
        raise DataError("near duplicates need datasketch 2 (its affine32 MinHash scheme)",
                        hint='pip install "datasketch>=2,<3"')
    a, b = (np.asarray(p, dtype=np.uint32) for p in reference.permutations)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    start = 0
    while start < len(texts):
        end, total = start, 0
        while end < len(texts):
            count = max(len(texts[end]) - NGRAM + 1, 1)
            if total and total + count > _CHUNK:
                break
            total += count
            end += 1
        hashes, offsets = _gram_hashes(texts[start:end])
        # (perms, shingles), so the per-row minimum runs over contiguous memory; uint32
        # arithmetic wraps, which is datasketch's affine32 permutation a * h + b mod 2^32.
        mixed = a[:, None] * _fmix32(hashes)[None, :] + b[:, None]
        out[start:end] = np.minimum.reduceat(mixed, offsets, axis=1).T
        start = end
    return out


def shingle_hashes(text: str) -> list[int]:
    """The 32-bit hash of each character 5-gram of one text (with repeats), for tests."""
    hashes, _ = _gram_hashes([text])
    return hashes.tolist()


def _gram_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All 5-gram hashes of several texts, and where each text's hashes start.

    A text shorter than 5 characters is padded with NUL to one 5-gram, so every text
    has at least one. The hash is polynomial over code points in 64 bits, folded to 32.
    """
    padded = [t if len(t) >= NGRAM else t + "\0" * (NGRAM - len(t)) for t in texts]
    lengths = np.fromiter((len(t) for t in padded), dtype=np.int64, count=len(padded))
    codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype="<u4").astype(np.uint64)
    counts = lengths - NGRAM + 1
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    text_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    positions = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(text_starts - offsets,
                                                                        counts)
    h = np.zeros(len(positions), dtype=np.uint64)
    for k in range(NGRAM):
        h += codes[positions + k] * _MULT[k]
    h ^= h >> np.uint64(29)
    h *= _MULT[NGRAM]
    folded = ((h >> np.uint64(32)) ^ h).astype(np.uint32)
    return folded, offsets


def _fmix32(h: np.ndarray) -> np.ndarray:
    """The MurmurHash3 finalizer, as datasketch applies it before permuting."""
    s1, m1, s2, m2, s3 = _FMIX32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


def _lsh_buckets(texts: list[str], threshold: float, num_perm: int):
    """Groups of 2+ texts whose signatures agree on some band, as index arrays."""
    from datasketch import MinHashLSH

    # Candidates are checked exactly, so false candidates cost only time: weigh misses
    # 19:1 (a pair right at the threshold is then found with probability ~0.9 or more).
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=_LSH_WEIGHTS)
        bands, rows = lsh.b, lsh.r
    except ValueError:  # thresholds near 1 want one band, which datasketch refuses
        bands, rows = (2, num_perm // 2) if num_perm >= 2 else (1, 1)
    signatures = minhash_signatures(texts, num_perm).astype(np.uint64)
    for band in range(bands):
        key = np.zeros(len(signatures), dtype=np.uint64)
        for col in range(band * rows, (band + 1) * rows):
            key = key * _MULT[0] + signatures[:, col]  # uint64 wraps; collisions are checked
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        sizes = np.diff(np.append(starts, len(ordered)))
        for first, size in zip(starts[sizes >= 2].tolist(), sizes[sizes >= 2].tolist(),
                               strict=True):
            yield order[first:first + size]


class _GramCache:
    """5-gram sets of texts, built when a candidate pair first needs them."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.sets: dict[int, frozenset[str]] = {}

    def grams(self, i: int) -> frozenset[str]:
        got = self.sets.get(i)
        if got is None:
            if len(self.sets) >= _MAX_CACHED:
                self.sets.clear()  # memory over speed: a few sets are rebuilt
            t = self.texts[i]
            got = frozenset({t[k:k + NGRAM] for k in range(len(t) - NGRAM + 1)} or {t})
            self.sets[i] = got
        return got

    def jaccard(self, i: int, j: int) -> float:
        a, b = self.grams(i), self.grams(j)
        return len(a & b) / len(a | b)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)


def _unique(texts: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """Distinct normalized texts, and the rows each stands for."""
    index: dict[str, int] = {}
    rows_of: list[list[int]] = []
    for i, text in enumerate(texts):
        key = normalize_text(text)
        u = index.setdefault(key, len(index))
        if u == len(rows_of):
            rows_of.append([])
        rows_of[u].append(i)
    return list(index), rows_of


def _clusters(groups) -> list[list[int]]:
    return sorted((sorted(g) for g in groups if len(g) >= 2), key=lambda g: g[0])


def _check(threshold: float, num_perm: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0 < threshold <= 1:
        raise DataError(f"similarity threshold {threshold!r} must be a number in (0, 1]",
                        hint=f"{DEFAULT_THRESHOLD} is the default for near duplicates; 1 keeps exact ones")
    if isinstance(num_perm, bool) or not isinstance(num_perm, int) or num_perm < 1:
        raise DataError(f"num_perm {num_perm!r} must be a positive integer",
                        hint=f"{DEFAULT_NUM_PERM} is the default")
