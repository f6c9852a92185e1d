"""load_mixture: weights repeat or subsample each source, the same way for the same seed."""

from __future__ import annotations

import json

import pytest

from tunelab.data.load import load_mixture
from tunelab.errors import DataError


def text_file(path, n):
    path.write_text("".join(json.dumps({"text": f"{path.stem} {i}"}) + "\n" for i in range(n)))
    return path


def lines(examples):
    return [(e.source, e.line) for e in examples]


@pytest.mark.parametrize("weight, count", [(1.0, 10), (2, 20), (0.5, 5), (2.5, 25), (0.25, 3),
                                           (1.04, 10), (0.05, 1)])
def test_weight_gives_the_expected_count(tmp_path, weight, count):
    a = text_file(tmp_path / "a.jsonl", 10)
    assert len(load_mixture([(a, "auto", weight)], seed=0)) == count


def test_sources_are_concatenated_and_subsamples_keep_file_order(tmp_path):
    a = text_file(tmp_path / "a.jsonl", 10)
    b = text_file(tmp_path / "b.jsonl", 7)
    mixed = load_mixture([(a, "text", 1.0), (b, "auto", 2.5)], seed=3)
    assert len(mixed) == 10 + 14 + 4  # 0.5 of 7 rounds half up
    assert lines(mixed[:10]) == [(str(a), i) for i in range(1, 11)]
    assert lines(mixed[10:24]) == [(str(b), i) for i in range(1, 8)] * 2
    tail = [line for _, line in lines(mixed[24:])]
    assert tail == sorted(tail) and len(set(tail)) == 4


def test_the_same_seed_gives_the_same_rows_and_seeds_differ(tmp_path):
    a = text_file(tmp_path / "a.jsonl", 40)
    picks = {seed: lines(load_mixture([(a, "auto", 0.5)], seed=seed)) for seed in range(5)}
    assert picks[0] == lines(load_mixture([(a, "auto", 0.5)], seed=0))
    assert len({tuple(p) for p in picks.values()}) > 1
    assert all(len(set(p)) == 20 for p in picks.values())


def test_every_bad_source_is_reported_at_once(tmp_path):
    a = text_file(tmp_path / "a.jsonl", 3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 5}\n')
    sources = [(a, "auto", 0), (tmp_path / "missing.jsonl", "auto", 1.0), (bad, "auto", 1.0),
               (a, "auto", float("nan"))]
    with pytest.raises(DataError, match="mixture of 4 source") as info:
        load_mixture(sources, seed=0)
    report = info.value.findings
    assert len(report) == 4
    assert "weight 0 must be a positive number" in report[0]
    assert "no such file" in report[1]
    assert report[2].startswith(f"{bad}:2 text: [not_string]")
    assert "weight nan" in report[3]


def test_no_sources_is_an_error():
    with pytest.raises(DataError, match="no sources"):
        load_mixture([], seed=0)
