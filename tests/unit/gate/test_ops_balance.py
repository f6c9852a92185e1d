"""balance: target counts, seeded sampling, the manifest."""

import json
from collections import Counter

import pytest

from tunelab.data.readers import read_records
from tunelab.errors import DataError
from tunelab.files import sha256_file
from tunelab.gate.balance import balance_file, balance_rows, parse_target, target_counts


def test_parse_target():
    assert parse_target("uniform") is None
    assert parse_target("pos=2, neg=1") == {"pos": 2.0, "neg": 1.0}
    for bad in ("pos", "pos=-1", "pos=x", "pos=0,neg=0", "=1"):
        with pytest.raises(DataError, match="--target"):
            parse_target(bad)


def test_target_counts():
    counts = {"a": 10, "b": 30, "c": 5}
    assert target_counts(counts, None, "over") == {"a": 30, "b": 30, "c": 30}
    assert target_counts(counts, None, "under") == {"a": 5, "b": 5, "c": 5}
    assert target_counts(counts, {"a": 1, "b": 2, "c": 1}, "over") == {"a": 15, "b": 30, "c": 15}
    assert target_counts(counts, {"a": 1, "b": 2, "c": 0}, "under") == {"a": 10, "b": 20, "c": 0}
    assert target_counts(counts, None, "over", size=10) == {"a": 4, "b": 3, "c": 3}
    with pytest.raises(DataError) as e:
        target_counts(counts, {"a": 1, "d": 1}, "over")
    assert len(e.value.findings) == 3  # b and c missing from the target, d has no rows
    with pytest.raises(DataError, match="--size"):
        target_counts(counts, None, "over", size=0)


def test_balance_rows_repeats_and_samples_deterministically():
    labels = ["a"] * 2 + ["b"] * 6
    picked = balance_rows(labels, {"a": 5, "b": 3}, seed=1)
    assert picked == sorted(picked) and picked == balance_rows(labels, {"a": 5, "b": 3}, seed=1)
    assert Counter(labels[i] for i in picked) == {"a": 5, "b": 3}
    assert Counter(picked[:5]) == {0: 3, 1: 2} or Counter(picked[:5]) == {0: 2, 1: 3}
    assert len(set(picked[5:])) == 3


def test_balance_file_writes_rows_and_manifest(tmp_path):
    src = tmp_path / "d.jsonl"
    rows = [{"text": f"t{i}", "label": "pos" if i < 8 else "neg"} for i in range(10)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "b.jsonl"
    m = balance_file(src, out, "label", method="under", seed=2)
    got = [r for _, r in read_records(out)]
    assert Counter(r["label"] for r in got) == {"pos": 2, "neg": 2}
    assert m["counts"] == {"neg": {"before": 2, "after": 2, "added": 0, "removed": 0},
                           "pos": {"before": 8, "after": 2, "added": 0, "removed": 6}}
    assert m["output_sha256"] == sha256_file(out) and m["input_sha256"] == sha256_file(src)
    assert json.loads((tmp_path / "b.balance.json").read_text()) == m
    m = balance_file(src, out, "label", target="pos=1,neg=1", method="over", seed=2)
    assert m["size"] == 16 and m["counts"]["neg"]["added"] == 6
    with pytest.raises(DataError, match="never changed"):
        balance_file(src, src, "label")
