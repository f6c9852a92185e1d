"""Property tests: whatever a file holds, check_data reports instead of raising, and every
row read is either accepted or rejected, never both, never lost."""

from __future__ import annotations

import codecs
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunelab.data.findings import Finding
from tunelab.data.readers import read_records
from tunelab.gate.check import check_data

TEXTS = st.sampled_from(["", " ", "hi", "user", "assistant", "system", "human", "gpt", "0",
                         "<|im_start|>", "a <|im_end|> b", "\n\nHuman: x\n\nAssistant: y",
                         "mail a@b.co", "4111 1111 1111 1111", "\ue000", "{{ x }}"]) \
    | st.text(max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXTS
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(TEXTS, inner, max_size=3), max_leaves=10)

VALID = [
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    {"instruction": "Add", "input": "2 and 2", "output": "4"},
    {"prompt": "Q", "completion": "A"},
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
    {"text": "a document"},
    {"label": "1", "sentence": "a fine film"},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Go"},
    {"instruction": "Greet", "instances": [{"input": "", "output": "Hello"}]},
]


@st.composite
def mutated_row(draw):
    """A valid row of some format with a few keys or nested values replaced or removed."""
    row = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    for _ in range(draw(st.integers(0, 3))):
        target = row
        path = []
        while isinstance(target, (dict, list)) and target and draw(st.booleans()):
            key = draw(st.sampled_from(list(target) if isinstance(target, dict)
                                       else list(range(len(target)))))
            path.append((target, key))
            target = target[key]
        if not path:
            row[draw(TEXTS)] = draw(VALUES)
            continue
        parent, key = path[-1]
        action = draw(st.sampled_from(["replace", "delete"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        else:
            parent[key] = draw(VALUES)
    return row


LINE = (st.binary(max_size=30)
        | VALUES.map(lambda v: json.dumps(v).encode())
        | mutated_row().map(lambda r: json.dumps(r).encode())
        | st.sampled_from(VALID).map(lambda r: json.dumps(r).encode())
        | st.sampled_from([b"", b"  ", b"\r", b"\xef\xbb\xbf{}", b"[", b"\xff\xfe", b"{bad"]))
JSONL = st.lists(LINE, max_size=14).map(b"\n".join) | st.binary(max_size=120)

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def non_blank_lines(data: bytes) -> set[int]:
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    return {n for n, raw in enumerate(data.split(b"\n"), start=1) if raw.strip(b" \t\r")}


def run(data: bytes, suffix: str, tokenizer=None):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        result = check_data(path, tokenizer=tokenizer)
        record_lines = {line for line, _ in read_records(path) if line > 0}
    return result, record_lines


def assert_accounted(result, lines):
    accepted = [e.line for e in result.examples]
    # A finding counts for its rows: in a JSON document it may sit on a field's line inside
    # its row, and a column every row lacks is one finding for all of them (line 0).
    rejected = {line for f in result.findings if f.is_error for line in f.row_lines}
    assert len(accepted) == len(set(accepted)) == result.accepted
    assert set(accepted).isdisjoint(rejected)
    assert len(rejected) == result.rejected
    assert set(accepted) | rejected == lines
    assert result.accepted + result.rejected == result.rows_read == len(lines)
    for f in result.findings:
        assert isinstance(f, Finding) and f.severity in ("error", "warning") and str(f)
        assert set(f.row_lines) <= lines
        assert f.line == 0 or f.line in lines or (len(f.rows) == 1 and f.line > f.rows[0])
    assert result.token_lengths is None or len(result.token_lengths) == result.accepted
    json.dumps(result.as_dict())


@FUZZ
@given(data=JSONL)
def test_check_never_raises_and_accounts_for_every_jsonl_line(data, tiny_tokenizer):
    result, record_lines = run(data, ".jsonl", tiny_tokenizer)
    lines = non_blank_lines(data)
    assert record_lines == lines
    assert_accounted(result, lines)
    if not lines:
        assert [f.code for f in result.findings] == ["empty_file"]


@settings(max_examples=80, deadline=None, database=None)
@given(data=JSONL, suffix=st.sampled_from([".json", ".csv", ".tsv"]))
def test_check_never_raises_in_other_containers(data, suffix):
    result, record_lines = run(data, suffix)
    assert_accounted(result, record_lines)


@settings(max_examples=60, deadline=None, database=None)
@given(rows=st.lists(mutated_row(), max_size=12))
def test_json_arrays_of_mutated_rows(rows):
    data = json.dumps(rows, indent=1).encode()
    result, record_lines = run(data, ".json")
    assert_accounted(result, record_lines)
    assert result.rows_read == len(rows)
