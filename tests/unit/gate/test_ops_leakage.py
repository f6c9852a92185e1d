"""Leakage between splits: exact and near pairs across files, never within one."""

import json

import pytest

from shared_data import shared_file
from tunelab.errors import DataError
from tunelab.gate.leakage import Leak, find_leakage, leakage_in_files


def test_pairs_across_splits_only():
    train = ["The movie was great fun to watch with the whole family.", "A dull film.",
             "A dull film."]
    test = ["a dull  FILM.", "The movie was great fun to watch with the whole family!",
            "Something else entirely, about cooking."]
    leaks = find_leakage([("train", train), ("test", test)])
    assert leaks == [
        Leak("exact", "train", 1, "test", 0, 1.0),
        Leak("exact", "train", 2, "test", 0, 1.0),
        Leak("near", "train", 0, "test", 1, leaks[2].similarity),
    ]
    assert 0.8 <= leaks[2].similarity < 1
    assert [k.kind for k in find_leakage([("train", train), ("test", test)], near=False)] == [
        "exact", "exact"]


def test_no_leak_within_one_split():
    assert find_leakage([("a", ["same text", "same text"]), ("b", ["other"])]) == []


def test_three_files_and_findings_name_both_lines(tmp_path):
    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    train = write("train.jsonl", [{"text": "alpha beta gamma delta", "label": 1},
                                  {"text": "a row only in train", "label": 0}])
    val = write("val.jsonl", [{"text": "nothing shared here", "label": 0}])
    test = write("test.jsonl", [{"text": "Alpha beta gamma delta", "label": 0}])
    report = leakage_in_files([train, val, test], exclude=["label"])
    assert [(k.kind, k.split_a, k.split_b) for k in report.leaks] == [
        ("exact", str(train), str(test))]
    finding = report.findings()[0]
    assert (finding.source, finding.line, finding.code) == (str(test), 1, "leak_exact")
    assert f"{train}:1" in finding.message
    summary = report.to_json()
    assert summary["leaked_rows"] == {str(train): 0, str(val): 0, str(test): 1}
    assert summary["pairs"][0]["line_a"] == 1 and summary["pairs"][0]["line_b"] == 1
    # with the (different) label compared too, the pair is no longer exact, only near
    assert [k.kind for k in leakage_in_files([train, test]).leaks] == ["near"]


def test_needs_two_distinct_files(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "x"}\n')
    with pytest.raises(DataError, match="two or more"):
        leakage_in_files([path])
    with pytest.raises(DataError, match="two or more"):
        leakage_in_files([path, path])


def test_sst2_files_with_different_column_names():
    train, test = shared_file("sst2/train.tsv"), shared_file("sst2/test.tsv")
    report = leakage_in_files([train, test], exclude=["label"])
    assert report.fields == {str(train): ["sentence"], str(test): ["content"]}
    assert all(k.split_a == str(train) and k.split_b == str(test) for k in report.leaks)
