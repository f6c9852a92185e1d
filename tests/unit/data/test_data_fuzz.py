"""Property tests: whatever bytes a file holds, check_file reports instead of raising."""

from __future__ import annotations

import codecs
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tunelab.data.load import check_file

KEYS = ["messages", "role", "content", "weight", "instruction", "input", "output", "response",
        "prompt", "completion", "conversations", "from", "value", "text", "system", "id"]
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.sampled_from(["user", "assistant", "system", "bot", "human", "gpt", "", " "])
           | st.text(max_size=8))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "bot"]),
     "content": st.text(max_size=6)},
    optional={"weight": st.sampled_from([0, 1, 0.5, None, True])})
CHAT_ROW = st.builds(lambda ms: {"messages": ms}, st.lists(MESSAGE, max_size=4))
LINE = (st.binary(max_size=40)
        | VALUES.map(lambda v: json.dumps(v).encode())
        | CHAT_ROW.map(lambda r: json.dumps(r).encode())
        | st.sampled_from([b"", b"  ", b"\r", b"\xef\xbb\xbf{}", b"[", b"]", b"\xff\xfe"]))
FILE = st.lists(LINE, max_size=8).map(b"\n".join) | st.binary(max_size=200)

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def non_blank_lines(data: bytes) -> set[int]:
    """Lines the reader must account for: anything but JSON whitespace (a leading BOM too)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    return {n for n, raw in enumerate(data.split(b"\n"), start=1) if raw.strip(b" \t\r")}


@FUZZ
@given(data=FILE)
@example(data=b'{"role": false, "text": "user"}')  # a column the text format does not read
def test_any_jsonl_bytes_become_examples_or_findings(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(data)
        examples, findings = check_file(path)
    for finding in findings:
        assert finding.severity in ("error", "warning") and finding.code and str(finding)
    lines = non_blank_lines(data)
    example_lines = [e.line for e in examples]
    # A finding counts for its rows: one that every row shares is one finding (line 0).
    error_lines = {line for f in findings if f.is_error for line in f.row_lines or (f.line,)}
    if not lines:
        assert examples == [] and [(f.line, f.code) for f in findings] == [(0, "empty_file")]
        return
    # Every non-blank line is an example or has an error, never both, never twice.
    assert len(example_lines) == len(set(example_lines))
    assert set(example_lines).isdisjoint(error_lines)
    assert set(example_lines) | error_lines == lines
    assert {f.line for f in findings if not f.rows} <= lines
    assert all(f.line == 0 and set(f.rows) <= lines for f in findings if f.rows)


@settings(max_examples=100, deadline=None, database=None)
@given(data=FILE, suffix=st.sampled_from([".json", ".csv", ".tsv"]))
def test_any_bytes_in_other_containers_never_raise(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        examples, findings = check_file(path)
    assert examples or any(f.is_error for f in findings)
    assert all(str(f) for f in findings)
