"""check_data on the real public data in ../shared/data: each known quirk is read
correctly or reported clearly (skipped where ../shared is absent)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from shared_data import shared_file
from tunelab.gate.check import check_data
from tunelab.gate.profile import profile_from_check


def found(result, severity=None):
    return [(f.line, f.code) for f in result.findings
            if severity is None or f.severity == severity]


def test_openai_toy_chat_defects_each_on_its_line(tiny_tokenizer):
    result = check_data(shared_file("openai_toy_chat/toy_chat_fine_tuning.jsonl"),
                        tokenizer=tiny_tokenizer)
    assert found(result) == [(0, "too_few_rows"), (3, "no_system"), (4, "no_user"),
                             (5, "too_long")]
    assert not result.ok and result.rows_read == result.accepted == 5


@pytest.mark.parametrize("name, rows, text_key", [
    ("sst2/dev.tsv", 872, "content"), ("sst2/test.tsv", 1821, "content")])
def test_sst2_dev_and_test_are_classification_tables(name, rows, text_key):
    result = check_data(shared_file(name))
    assert result.format == "classification" and result.ok
    assert (result.rows_read, result.accepted) == (rows, rows)
    assert set(result.columns) == {"label", text_key}
    first = result.examples[0]
    assert first.line == 2 and first.messages[1].content in ("0", "1")
    labels = profile_from_check(result).labels
    assert set(labels) == {"0", "1"} and sum(labels.values()) == rows


def test_sst2_train_uses_sentence_and_all_67349_rows_are_read():
    result = check_data(shared_file("sst2/train.tsv"), near_duplicates=False)
    assert result.format == "classification"
    assert (result.rows_read, result.accepted, result.rejected) == (67349, 67349, 0)
    assert set(result.columns) == {"label", "sentence"}
    assert result.examples[0].messages[0].content == "hide new secretions from the parental units"
    codes = Counter(f.code for f in result.findings)
    # SST-2's phrase table repeats phrases; some with both labels.
    assert set(codes) <= {"exact_duplicate", "conflicting_labels"} and codes["exact_duplicate"]


def test_hh_rlhf_pairs_and_their_quirks_by_line():
    path = shared_file("hh_rlhf_harmless_base/test.jsonl")
    result = check_data(path, near_duplicates=False)
    assert result.format == "preference"
    # An empty preferred answer is a choice (say nothing): said by line, kept (data/pairs.py).
    assert found(result, "error") == []
    empty = [line for line, code in found(result) if code == "empty_content"]
    assert empty == [87, 517, 926, 1104]
    mismatched = [line for line, code in found(result) if code == "prompt_mismatch"]
    assert mismatched == [1255, 1689, 1951, 1953, 2037]
    assert (result.rows_read, result.accepted, result.rejected) == (2312, 2312, 0)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    first = result.examples[0]
    assert first.messages[0].content == "what are some pranks with a pen i can do?"
    assert rows[0]["chosen"].endswith(first.messages[-1].content)
    assert first.meta == {"rejected": rows[0]["rejected"]}


@pytest.mark.parametrize("name, rows", [
    ("alpaca_seed_tasks/seed_tasks.jsonl", 175),
    ("self_instruct/user_oriented_instructions.jsonl", 252)])
def test_nested_instances_read_one_example_per_row(name, rows):
    path = shared_file(name)
    raw = [json.loads(x) for x in path.read_text().splitlines()]
    result = check_data(path, near_duplicates=False)
    assert result.format == "self_instruct" and result.ok
    assert result.accepted == rows
    assert "extra_instances" not in result.counts()  # one instance per row in both sets
    for row, example in zip(raw, result.examples, strict=True):
        instance = row["instances"][0]
        assert example.messages[-1].content == instance["output"]
        assert example.messages[0].content.startswith(row["instruction"])


def test_gpteacher_response_key_and_gsm8k_load_without_errors():
    for name, rows in (("gpteacher/codegen-instruct.json", 4535), ("gsm8k/gsm_8k_train.json", 7473)):
        result = check_data(shared_file(name), near_duplicates=False)
        assert result.format == "alpaca" and result.accepted == rows and result.ok


@pytest.mark.parametrize("name", ["bbq/Religion.jsonl", "fastchat_sharegpt/mt_bench_question.jsonl"])
def test_evaluation_sets_are_refused_with_their_keys_named(name):
    result = check_data(shared_file(name), near_duplicates=False)
    assert result.accepted == 0 and result.format is None
    # Every row fits no format: one finding for the file (not one per row, nor too_few_rows).
    assert [(f.line, f.code) for f in result.findings] == [(0, "unknown_format")]
    assert f"no format fits the keys of all {result.rows_read:,} rows" in result.findings[0].message
