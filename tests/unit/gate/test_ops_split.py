"""split: deterministic, stratified within one row, duplicates and groups kept together."""

import csv
import json
import random
from collections import Counter

import pytest

from shared_data import shared_file
from tunelab.data.load import holdout_split
from tunelab.data.readers import read_records
from tunelab.errors import DataError
from tunelab.files import sha256_file
from tunelab.gate.dedup import NGRAM, normalize_text
from tunelab.gate.split import class_quotas, parse_ratios, split_file, split_rows


def test_holdout_split_is_kept():
    train, held = holdout_split(list(range(10)), 0.2, seed=1)
    assert len(held) == 2 and sorted(train + held) == list(range(10))


def test_parse_ratios():
    assert parse_ratios("0.8,0.1,0.1") == [0.8, 0.1, 0.1]
    for bad in ("0.8,0.3", "1", "0.5,x", "1.2,-0.2", "0.5,0.5,0"):
        with pytest.raises(DataError, match="--ratios"):
            parse_ratios(bad)


@pytest.mark.parametrize("count", [0, 1, 2, 7, 10, 99, 872])
def test_quotas_sum_to_count_within_one_row(count):
    ratios = [0.8, 0.1, 0.1]
    quotas = class_quotas(count, ratios)
    assert sum(quotas) == count
    assert all(abs(q - count * r) < 1 for q, r in zip(quotas, ratios, strict=True))


def test_split_rows_is_deterministic_and_stratified():
    rng = random.Random(0)
    strata = [rng.choice("aabbbcx") for _ in range(500)]
    ratios = [0.7, 0.2, 0.1]
    first = split_rows(500, ratios, seed=3, strata=strata)
    assert first == split_rows(500, ratios, seed=3, strata=strata)
    assert first != split_rows(500, ratios, seed=4, strata=strata)
    totals = Counter(strata)
    for s, r in enumerate(ratios):
        got = Counter(c for c, a in zip(strata, first, strict=True) if a == s)
        for c in totals:
            assert abs(got[c] - totals[c] * r) <= 1


def test_groups_clusters_and_train_only_rows_stay_together():
    n = 60
    groups = [f"g{i // 3}" if i < 30 else None for i in range(n)]
    together = [[40, 41, 42], [50, 59]]
    train_only = [i in (45, 59) for i in range(n)]
    assign = split_rows(n, [0.5, 0.5], seed=1, groups=groups, together=together,
                        train_only=train_only)
    for g in range(10):
        assert len({assign[i] for i in range(3 * g, 3 * g + 3)}) == 1
    assert assign[40] == assign[41] == assign[42]
    assert assign[45] == 0 and assign[50] == assign[59] == 0
    assert abs(Counter(assign)[0] - 30) <= 3


def _grams(text):
    t = normalize_text(text)
    return {t[k:k + NGRAM] for k in range(len(t) - NGRAM + 1)} or {t}


def _brute_force_pairs(texts, threshold=0.8):
    grams = [_grams(t) for t in texts]
    return [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))
            if len(grams[i] & grams[j]) / len(grams[i] | grams[j]) >= threshold]


def _check_split(manifest, rows, ratios):
    """Every class within one row of its share; parts hold every row once; hashes right."""
    labels = Counter(r["label"] for r in rows)
    seen = Counter()
    for (name, part), ratio in zip(manifest["parts"].items(), ratios, strict=True):
        part_rows = [r for _, r in read_records(part["path"])]
        assert len(part_rows) == part["rows"]
        assert sha256_file(part["path"]) == part["sha256"]
        got = Counter(r["label"] for r in part_rows)
        for label, total in labels.items():
            assert abs(got[label] - total * ratio) <= 1, (name, label)
        seen.update((r["label"], r["content"]) for r in part_rows)
    assert seen == Counter((r["label"], r["content"]) for r in rows)
    assert manifest["max_deviation_rows"] <= 1


def test_sst2_dev_stratified_split_keeps_proportions_and_near_duplicates(tmp_path):
    """Acceptance: `split dev.tsv --stratify label`; also with near duplicates planted."""
    dev = shared_file("sst2/dev.tsv")
    rows = [r for _, r in read_records(dev)]
    ratios = [0.8, 0.1, 0.1]
    manifest = split_file(dev, ratios, seed=13, out_dir=tmp_path / "plain", stratify="label")
    _check_split(manifest, rows, ratios)
    assert manifest["input_sha256"] == sha256_file(dev) and manifest["rows"] == 872
    assert _brute_force_pairs([r["content"] for r in rows]) == []  # dev has none of its own

    # plant 60 near duplicates (a word dropped or punctuation added) of random rows
    rng = random.Random(7)
    planted = list(rows)
    for i in rng.sample(range(len(rows)), 60):
        words = rows[i]["content"].split()
        text = " ".join(words[:-1]) if len(words) > 12 else rows[i]["content"] + " !"
        planted.append({"label": rows[i]["label"], "content": text})
    path = tmp_path / "planted.tsv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["label", "content"], delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(planted)
    manifest = split_file(path, ratios, seed=13, out_dir=tmp_path / "planted",
                          stratify="label")
    _check_split(manifest, planted, ratios)
    part_of = {}
    for name, part in manifest["parts"].items():
        for _, r in read_records(part["path"]):
            part_of.setdefault(r["content"], set()).add(name)
    pairs = _brute_force_pairs([r["content"] for r in planted])
    assert len(pairs) >= 60
    for i, j in pairs:
        assert part_of[planted[i]["content"]] == part_of[planted[j]["content"]]
    assert manifest["clusters_kept_together"] >= 60


def test_split_file_writes_manifest_and_keeps_augmented_rows_in_train(tmp_path):
    rows = [{"text": f"row number {i} about topic {i % 7}", "label": i % 2} for i in range(40)]
    rows.append({"text": "augmented copy", "label": 0, "augmented": "swap",
                 "augmented_from": 3})
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = split_file(src, [0.5, 0.5], seed=0, names=["fit", "check"], stratify="label")
    assert json.loads((tmp_path / "d.split.json").read_text()) == m
    fit = [r for _, r in read_records(tmp_path / "d.fit.jsonl")]
    assert {"text": "augmented copy", "label": 0, "augmented": "swap",
            "augmented_from": 3} in fit
    assert rows[2] in fit  # the source row (line 3) goes with it
    assert m["augmented_rows"] == 1 and m["compared_fields"] == ["text"]
    with pytest.raises(DataError, match="distinct names"):
        split_file(src, [0.5, 0.5], seed=0, names=["a"])
    with pytest.raises(DataError, match="no such column"):
        split_file(src, [0.5, 0.5], seed=0, stratify="lable")
