"""augment: word noise, tagged rows after their sources, paraphrase through a function."""

import json
import random

import pytest

from tunelab.data.readers import read_records
from tunelab.errors import DataError
from tunelab.gate.augment import augment_file, augment_rows, parse_methods, word_dropout, word_swap


def test_word_noise():
    rng = random.Random(0)
    text = "one two three four five six seven eight nine ten"
    dropped = word_dropout(text, 0.3, rng)
    assert set(dropped.split()) < set(text.split())
    assert word_dropout("single", 0.99, rng) == "single"
    swapped = word_swap(text, 0.2, random.Random(1))
    assert sorted(swapped.split()) == sorted(text.split()) and swapped != text
    assert word_swap("alone", 0.5, rng) == "alone"


def test_parse_methods():
    assert parse_methods("swap, dropout,swap") == ["swap", "dropout"]
    with pytest.raises(DataError, match="unknown"):
        parse_methods("dropout,backtranslate")


def test_augment_rows_tags_and_places_new_rows_after_their_source():
    rows = [{"text": "the quick brown fox jumps over the lazy dog", "label": 1},
            {"text": "hi", "label": 0},
            {"text": "already made", "label": 1, "augmented": "swap", "augmented_from": 1}]

    def paraphrase(texts):
        return [t.upper() if t != "hi" else "hi" for t in texts]

    out, stats = augment_rows(rows, [1, 2, 3], "text", ["paraphrase", "swap"], copies=1,
                              p=0.2, seed=0, paraphrase=paraphrase)
    assert out[0] == rows[0]
    assert out[1] == {"text": "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG", "label": 1,
                      "augmented": "paraphrase", "augmented_from": 1}
    assert out[2]["augmented"] == "swap" and out[2]["augmented_from"] == 1
    assert out[3] == rows[1] and out[4] == rows[2] and len(out) == 5
    assert stats["paraphrase"] == {"added": 1, "unchanged": 1, "duplicate": 0, "empty": 0}
    assert stats["swap"]["unchanged"] == 1  # "hi" has one word
    assert stats["already_augmented"] == 1


def test_augment_rows_refuses_bad_input():
    rows = [{"text": "a b c"}, {"text": 3}]
    with pytest.raises(DataError, match="no text"):
        augment_rows(rows, [1, 2], "text", ["swap"])
    with pytest.raises(DataError, match="needs a model"):
        augment_rows(rows[:1], [1], "text", ["paraphrase"])
    with pytest.raises(DataError, match="returned 0 texts for 1"):
        augment_rows(rows[:1], [1], "text", ["paraphrase"], paraphrase=lambda t: [])
    with pytest.raises(DataError, match="copies"):
        augment_rows(rows[:1], [1], "text", ["swap"], copies=0)


def test_augment_file_writes_rows_and_manifest(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": f"word{i} " * 6 + "end", "id": i}) + "\n"
                           for i in range(3)))
    out = tmp_path / "aug.jsonl"
    m = augment_file(src, out, "text", ["dropout"], copies=2, p=0.4, seed=1)
    got = [r for _, r in read_records(out)]
    assert len(got) == m["rows_out"] == 3 + m["counts"]["dropout"]["added"]
    assert m["counts"]["dropout"]["added"] >= 3
    assert all(r["augmented"] == "dropout" for r in got if "augmented" in r)
    assert json.loads((tmp_path / "aug.augment.json").read_text()) == m
