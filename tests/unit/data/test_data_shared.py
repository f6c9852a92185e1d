"""The loaders against real public data in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

import json

from shared_data import shared_file
from tunelab.data.example import Message
from tunelab.data.load import check_file, load_examples


def test_gsm8k_loads_7473_alpaca_examples():
    path = shared_file("gsm8k/gsm_8k_train.json")
    rows = json.loads(path.read_text())
    examples = load_examples(path)
    assert len(examples) == 7473
    first = examples[0]
    assert first.line == 2 and first.source == str(path)
    assert first.messages == [Message("user", rows[0]["instruction"]),
                              Message("assistant", rows[0]["output"])]
    # Five lines per pretty-printed row, so row i starts on line 2 + 5 * i.
    assert [e.line for e in examples] == [2 + 5 * i for i in range(7473)]
    assert examples[-1].messages[1].content == rows[-1]["output"]


def test_gpteacher_codegen_uses_the_response_key_and_empty_inputs():
    path = shared_file("gpteacher/codegen-instruct.json")
    rows = json.loads(path.read_text())
    examples = load_examples(path, "alpaca")
    assert len(examples) == len(rows) == 4535
    for row, example in zip(rows, examples, strict=True):
        user = row["instruction"] + ("\n\n" + row["input"] if row["input"].strip() else "")
        assert example.messages == [Message("user", user), Message("assistant", row["response"])]
    assert any(not row["input"] for row in rows)


def test_fastchat_dummy_conversation_loads_as_sharegpt():
    path = shared_file("fastchat_sharegpt/dummy_conversation.json")
    examples = load_examples(path)
    assert len(examples) == 500
    assert examples[0].meta == {"id": "identity_0"}
    assert [m.role for m in examples[0].messages] == ["user", "assistant", "user", "assistant"]
    assert examples[0].messages[1].content.startswith("I am Vicuna")


def test_openai_toy_chat_loads_and_its_defects_are_not_errors():
    # Its defects are a row without a system message (line 3), a row without a user
    # message (line 4) and a very long answer (line 5): all valid chat, so it loads.
    path = shared_file("openai_toy_chat/toy_chat_fine_tuning.jsonl")
    examples, findings = check_file(path)
    assert findings == []
    assert [e.line for e in examples] == [1, 2, 3, 4, 5]
    assert [m.role for m in examples[2].messages] == ["user", "assistant"]
    assert [m.role for m in examples[3].messages] == ["system", "assistant"]
    assert len(examples[4].messages[-1].content) > 20_000
    assert len(load_examples(path)) == 5


def test_sst2_tsv_reads_as_classification_with_its_own_text_column():
    # the quirk: train names its text column `sentence`, dev/test name it `content`
    path = shared_file("sst2/dev.tsv")
    examples, findings = check_file(path)
    assert len(examples) == 872 and not [f for f in findings if f.severity == "error"]
    assert examples[0].line == 2 and examples[0].meta["label"] in ("0", "1", 0, 1)
