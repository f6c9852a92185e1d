"""read_records: rows and their lines from JSONL, JSON, CSV, TSV, Parquet; bad rows as findings."""

from __future__ import annotations

import json

import pytest

from tunelab.data.findings import Finding
from tunelab.data.readers import FieldLines, read_located, read_records
from tunelab.errors import DataError


def records(path):
    return list(read_records(path))


def codes(recs):
    return [(line, r.code) for line, r in recs if isinstance(r, Finding)]


def test_jsonl_lines_skip_blank_lines_and_keep_going_after_a_bad_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"a": 1}\n\n  \r\n{"a": 2\n{"a": 3}\r\n')
    recs = records(p)
    assert recs[0] == (1, {"a": 1})
    assert recs[1][0] == 4 and recs[1][1].code == "invalid_json"
    assert "column" in recs[1][1].message
    assert recs[2] == (5, {"a": 3})
    assert len(recs) == 3


def test_jsonl_with_a_json_array_inside_says_to_rename_it(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('[\n  {"a": 1}\n]\n')
    first = records(p)[0][1]
    assert first.code == "invalid_json" and "rename the file to .json" in first.message


def test_bom_is_ignored(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert records(p) == [(1, {"a": 1})]


def test_invalid_utf8_in_jsonl_names_the_line_and_reads_the_rest(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n{"a": 3}\n')
    recs = records(p)
    assert codes(recs) == [(2, "invalid_utf8")]
    assert "0xe9" in recs[1][1].message and "UTF-8" in recs[1][1].message
    assert recs[2] == (3, {"a": 3})


def test_invalid_utf8_in_json_names_every_bad_line(tmp_path):
    p = tmp_path / "d.json"
    p.write_bytes(b'[\n{"a": "\xff"},\n{"a": 2},\n{"a": "\xfe"}\n]')
    assert codes(records(p)) == [(2, "invalid_utf8"), (4, "invalid_utf8")]


@pytest.mark.parametrize("name, content", [
    ("empty.jsonl", b""), ("blank.jsonl", b"\n  \n"), ("empty.json", b""),
    ("blank.json", b" \n"), ("array.json", b"[\n]\n"), ("empty.csv", b""),
    ("header.csv", b"a,b\n"), ("header.tsv", b"a\tb\n\n"),
])
def test_files_without_rows_are_one_empty_file_finding(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    assert codes(records(p)) == [(0, "empty_file")]


def test_json_array_lines_are_where_each_element_starts(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n  {\n    "a": 1,\n    "b": "x\\ny"\n  },\n\n  {"a": 2}, {"a": 3},\n'
                 '  {\n    "a": [\n 4\n]\n  }\n]\n')
    assert records(p) == [(2, {"a": 1, "b": "x\ny"}), (7, {"a": 2}), (7, {"a": 3}),
                          (8, {"a": [4]})]


def test_json_array_written_by_json_dump_indent(tmp_path):
    rows = [{"text": f"row {i}", "nested": {"k": [i, i + 1]}} for i in range(5)]
    text = json.dumps(rows, indent=2)
    starts = [n for n, line in enumerate(text.split("\n"), start=1) if line == "  {"]
    p = tmp_path / "d.json"
    p.write_text(text)
    assert records(p) == list(zip(starts, rows, strict=True))


def test_json_single_object_and_jsonl_content_in_a_json_file(tmp_path):
    one = tmp_path / "one.json"
    one.write_text('\n{\n  "text": "hi"\n}\n')
    assert records(one) == [(2, {"text": "hi"})]
    lines = tmp_path / "lines.json"
    lines.write_text('{"text": "a"}\n{"text": "b"}\nnot json\n')
    recs = records(lines)
    assert recs[:2] == [(1, {"text": "a"}), (2, {"text": "b"})]
    assert codes(recs) == [(3, "invalid_json")]


@pytest.mark.parametrize("text, line, words", [
    ('[\n{"a": 1},\n{"a": 2},\n]\n', 4, "comma before the closing"),
    ('[\n{"a": 1},\n{"a": 2}\n\n', 3, "not closed"),
    ('[\n{"a": 1},\n', 2, "not closed"),
    ('[\n{"a": 1}\n{"a": 2}\n]', 3, "expected ',' or ']'"),
    ('[\n{"a": 1},\n{"a": }\n]', 3, "Expecting value"),
    ('[\n{"a": 1}] extra', 2, "extra data"),
])
def test_json_array_faults_name_their_line(tmp_path, text, line, words):
    p = tmp_path / "d.json"
    p.write_text(text)
    recs = records(p)
    assert recs[0] == (2, {"a": 1})
    bad = [(n, r) for n, r in recs if isinstance(r, Finding)]
    assert len(bad) == 1 and bad[0][0] == line and words in bad[0][1].message


def test_csv_multiline_quoted_field_keeps_the_start_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n"one\nrow, two lines",a\n\nsecond,b\nthree,c,extra\nfour,d\n',
                 newline="")
    recs = records(p)
    assert recs[0] == (2, {"text": "one\nrow, two lines", "label": "a"})
    assert recs[1] == (5, {"text": "second", "label": "b"})
    assert recs[2][0] == 6 and recs[2][1].code == "wrong_field_count"
    assert recs[3] == (7, {"text": "four", "label": "d"})


def test_csv_duplicate_header_is_a_finding(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,text\na,b\n")
    assert codes(records(p)) == [(1, "duplicate_column")]


def test_tsv(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("label\ttext\n1\ta, b\n0\tc\n")
    assert records(p) == [(2, {"label": "1", "text": "a, b"}), (3, {"label": "0", "text": "c"})]


def test_parquet_rows_are_numbered_from_one(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": "b"}]), p)
    assert records(p) == [(1, {"text": "a"}), (2, {"text": "b"})]


def test_corrupt_parquet_is_a_finding(tmp_path):
    pytest.importorskip("pyarrow")
    p = tmp_path / "d.parquet"
    p.write_bytes(b"this is not parquet at all")
    assert codes(records(p)) == [(0, "invalid_parquet")]


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.parquet"])
def test_missing_file_raises_data_error_with_a_hint(tmp_path, name):
    with pytest.raises(DataError, match="no such file") as info:
        records(tmp_path / name)
    assert "check the path" in info.value.hint


def test_directory_and_unknown_suffix_raise(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        records(tmp_path / "dir.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="'.txt' is not a data format") as info:
        records(tmp_path / "d.txt")
    assert ".jsonl" in info.value.hint


@pytest.mark.parametrize("name, text, line, start", [
    ("d.jsonl", '{"text": "a"}\n{"text": "b\n', 2, "Unterminated string starting at column 10"),
    ("d.json", '[\n  {"text": "a"},\n  {"text": "b}]', 3, "Unterminated string starting at "
     "column 12"),
    ("d.json", '[\n  {"text": "a"},\n  {"text": "b}\n]', 3, "Invalid control character at "
     "column 15"),
    ("d.json", '{"text": "a",\n "b": }', 2, "Expecting value at column 7"),
])
def test_json_messages_do_not_say_at_twice(tmp_path, name, text, line, start):
    p = tmp_path / name
    p.write_text(text)
    (finding,) = [r for _, r in records(p) if isinstance(r, Finding)]
    assert finding.line == line
    assert finding.message.startswith(start)
    assert " at at " not in finding.message


def test_field_lines_of_a_row_in_a_json_array(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n  {"a": 1},\n  {\n    "messages": [\n      {"role": "user",\n'
                 '       "content": "hi"},\n      {\n        "role": "bot"\n      }\n    ],\n'
                 '    "x.y": {"z": 3},\n    "d": 1,\n    "d": 2\n  }\n]\n')
    (first, _, first_lines), (start, row, lines) = read_located(p)
    assert (first, first_lines.line_of("a")) == (2, 2)
    assert isinstance(lines, FieldLines) and (start, row["d"]) == (3, 2)
    assert lines.line_of("messages") == 4
    assert lines.line_of("messages[0].content") == 6
    assert lines.line_of("messages[1]") == 7  # an element: its first line
    assert lines.line_of("messages[1].role") == 8
    assert lines.line_of("messages[1].content") == 7  # absent: the deepest part there is
    assert lines.line_of("messages[5].role") == 4
    assert lines.line_of("x.y.z") == 11  # a key holding a dot is still found
    assert lines.line_of("d") == 13  # a repeated key: the one json keeps, the last
    assert lines.line_of("absent") == 3
    finding = Finding(str(p), 3, "messages[1].role", "unknown_role", "x")
    placed = lines.place(finding)
    assert (placed.line, placed.row_lines) == (8, (3,))
    assert lines.place(Finding(str(p), 3, None, "c", "m")).line == 3


def test_only_json_documents_have_field_lines(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"a": 1}\n')
    one = tmp_path / "one.json"
    one.write_text('{\n  "a": 1,\n  "b": 2\n}\n')
    assert [lines for _, _, lines in read_located(jsonl)] == [None]
    ((line, _, lines),) = read_located(one)
    assert (line, lines.line_of("b")) == (1, 3)
