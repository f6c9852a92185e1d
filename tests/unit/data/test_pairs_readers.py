"""Preference pairs in their five shapes, read by one format; rendered answer-only."""

from __future__ import annotations

import json

import pytest

from tunelab.data.example import Message
from tunelab.data.formats import detect_format, to_example
from tunelab.data.load import check_file, load_examples, load_pairs, require_pairs
from tunelab.data.pairs import pair_length_policy, tokenize_pair
from tunelab.data.template import IGNORE_INDEX
from tunelab.errors import DataError

HH = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant:"
PROMPT = [Message("user", "Hi"), Message("assistant", "Hello!", 0.0), Message("user", "What is 2+2?")]
SHAPES = {
    "hh": {"chosen": HH + " It is 4.", "rejected": HH + " It is 5."},
    "trl_standard": {"prompt": "What is 2+2?", "chosen": "It is 4.", "rejected": "It is 5."},
    "trl_conversational": {
        "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                   {"role": "user", "content": "What is 2+2?"}],
        "chosen": [{"role": "assistant", "content": "It is 4."}],
        "rejected": [{"role": "assistant", "content": "It is 5."}]},
    "trl_implicit_prompt": {
        "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                   {"role": "user", "content": "What is 2+2?"},
                   {"role": "assistant", "content": "It is 4."}],
        "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                     {"role": "user", "content": "What is 2+2?"},
                     {"role": "assistant", "content": "It is 5."}]},
    "openai": {"input": {"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2+2?"}]},
        "preferred_output": [{"role": "assistant", "content": "It is 4."}],
        "non_preferred_output": [{"role": "assistant", "content": "It is 5."}]},
    "llamafactory": {"conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "What is 2+2?"}],
        "chosen": {"from": "gpt", "value": "It is 4."},
        "rejected": {"from": "gpt", "value": "It is 5."}},
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_detected_and_read_as_the_same_pair(shape):
    row = SHAPES[shape]
    assert detect_format(row) == "preference"
    example, findings = to_example(row, "preference", "p.jsonl", 3)
    assert findings == []
    prompt = PROMPT if shape != "trl_standard" else [Message("user", "What is 2+2?")]
    assert example.messages == [*prompt, Message("assistant", "It is 4.")]
    assert example.rejected == "It is 5." and example.line == 3


def test_pair_files_were_misread_as_chats_and_are_pairs_now(tmp_path):
    # LLaMA-Factory rows hold `conversations` (sharegpt) and OpenAI rows `input` (a text
    # column): both were read as something else; now they load as pairs, line by line.
    for shape in ("llamafactory", "openai"):
        path = tmp_path / f"{shape}.jsonl"
        path.write_text("\n".join(json.dumps(SHAPES[shape]) for _ in range(3)) + "\n")
        examples = load_pairs(path)
        assert [e.line for e in examples] == [1, 2, 3]
        assert all(e.rejected == "It is 5." for e in examples)


@pytest.mark.parametrize("row, field, code", [
    ({"input": {"messages": []}, "preferred_output": [{"role": "assistant", "content": "a"}]},
     "non_preferred_output", "missing_field"),
    ({"input": "not an object", "preferred_output": [], "non_preferred_output": []},
     "input", "missing_messages"),
    ({"input": {"messages": [{"role": "user", "content": "q"}]},
      "preferred_output": [{"role": "assistant", "content": "a"},
                           {"role": "assistant", "content": "b"}],
      "non_preferred_output": [{"role": "assistant", "content": "c"}]},
     "preferred_output", "bad_answer"),
    ({"conversations": [{"from": "hooman", "value": "q"}], "chosen": {"from": "gpt", "value": "a"},
      "rejected": {"from": "gpt", "value": "b"}}, "conversations[0].from", "unknown_role"),
    ({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": 3}],
      "rejected": [{"role": "assistant", "content": "b"}]}, "chosen[0].content", "not_string"),
    ({"prompt": "q", "chosen": "", "rejected": " "}, "chosen", "empty_content"),
    ({"prompt": [{"role": "system", "content": "s"}], "chosen": [{"role": "assistant", "content": "a"}],
      "rejected": [{"role": "assistant", "content": "b"}]}, None, "no_prompt"),
])
def test_bad_pairs_are_errors_naming_the_field(row, field, code):
    example, findings = to_example(row, "preference", "p.jsonl", 7)
    assert example is None
    assert (field, code, "error", 7) in [(f.field, f.code, f.severity, f.line) for f in findings]


def test_a_bad_row_stops_the_load_with_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [SHAPES["openai"], SHAPES["openai"], dict(SHAPES["openai"], preferred_output="x")]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError) as e:
        load_pairs(path)
    assert any(":3 preferred_output: [messages_not_list]" in line for line in e.value.findings)


def test_rows_that_are_not_pairs_are_refused_with_their_lines(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n")
    with pytest.raises(DataError) as e:
        require_pairs(load_examples(path), "train.method dpo")
    assert "train.method dpo trains on preference pairs" in e.value.message
    assert e.value.findings == [f"{path}: 1 row(s) are not pairs (no rejected answer), at line(s) 1"]


def test_hh_rlhf_file_reads_in_place_with_its_quirks_by_line(tmp_path):
    from shared_data import shared_file

    path = shared_file("hh_rlhf_harmless_base/test.jsonl")
    examples, findings = check_file(path)
    assert len(examples) == 2312 and all(e.rejected for e in examples if e.line not in (87, 517, 926, 1104))
    by_code = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f.line)
    assert not [f for f in findings if f.is_error]
    # an empty preferred answer ("say nothing") is kept and said; a naive split is reported
    assert by_code["empty_content"] == [87, 517, 926, 1104]
    assert by_code["prompt_mismatch"] == [1255, 1689, 1951, 1953, 2037]
    empty = next(e for e in examples if e.line == 87)
    assert empty.messages[-1] == Message("assistant", "") and empty.rejected


def test_llamafactory_pair_file_reads_every_row():
    from shared_data import shared_file

    path = shared_file("llamafactory_zh/dpo_zh_demo.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    examples = load_pairs(path)
    assert len(examples) == len(raw) == 300
    first = examples[0]
    assert first.messages[0] == Message("user", raw[0]["conversations"][0]["value"])
    assert first.messages[-1].content == raw[0]["chosen"]["value"].strip()
    assert first.rejected == raw[0]["rejected"]["value"].strip()
    assert first.line == 2  # the row's opening line in the JSON array


def test_rendering_masks_the_prompt_and_shares_its_tokens(tiny_tokenizer):
    example, _ = to_example(SHAPES["openai"], "preference", "p.jsonl", 1)
    pair = tokenize_pair(tiny_tokenizer, example)
    c, r = pair.chosen, pair.rejected
    first = next(i for i, x in enumerate(c.labels) if x != IGNORE_INDEX)
    assert c.input_ids[:first] == r.input_ids[:first]  # the same prompt tokens
    assert all(x == IGNORE_INDEX for x in r.labels[:first])  # earlier turns not compared
    answer = tiny_tokenizer.decode([x for x in c.labels if x != IGNORE_INDEX])
    assert answer == "It is 4.<|im_end|>"
    assert tiny_tokenizer.decode([x for x in r.labels if x != IGNORE_INDEX]) == "It is 5.<|im_end|>"


def test_length_policy_goes_by_the_longer_side(tiny_tokenizer):
    example, _ = to_example({"prompt": "q", "chosen": "a", "rejected": "b " * 40}, "preference",
                            "p.jsonl", 1)
    pair = tokenize_pair(tiny_tokenizer, example)
    limit = len(pair.chosen) + 2
    kept, rep = pair_length_policy([pair], limit, "drop")
    assert kept == [] and rep.dropped == 1 and rep.dropped_lines == ["p.jsonl:1"]
    kept, rep = pair_length_policy([pair], limit, "truncate")
    assert rep.truncated == 1 and max(len(kept[0].chosen), len(kept[0].rejected)) == limit
    with pytest.raises(DataError):
        pair_length_policy([pair], limit, "error")
