"""clean: text normalization, missing values, redaction, empty and duplicate rows, the log."""

import csv
import json
from types import SimpleNamespace

import pytest

from tunelab.errors import DataError
from tunelab.gate.clean import (
    Change,
    CleanOptions,
    change_log,
    clean_file,
    clean_rows,
    clean_text,
    parse_missing,
    parse_redact,
    redact_text,
)


@pytest.mark.parametrize("raw, cleaned, what", [
    ("ok", "ok", []),
    ("Cafe\u0301", "Café", ["unicode NFC"]),
    ("a\x00b\x7fc\u200b", "abc", ["3 control characters removed"]),
    ("  a \u00a0 b\t\tc  ", "a b c", ["whitespace"]),
    ("one\r\ntwo\r\r\r\rthree", "one\ntwo\n\nthree", ["whitespace"]),
    ("def f():\n    return  1  \n", "def f():\n    return 1", ["whitespace"]),
    ("tab\tkept?\n\tindent", "tab kept?\n\tindent", ["whitespace"]),
])
def test_clean_text(raw, cleaned, what):
    assert clean_text(raw) == (cleaned, what)


def test_parse_rules():
    assert parse_missing(["label=drop", "*=fill:n/a", "x=fill:"]) == {
        "label": "drop", "*": "fill:n/a", "x": "fill:"}
    with pytest.raises(DataError) as e:
        parse_missing(["label", "=drop", "a=keep"])
    assert len(e.value.findings) == 3
    assert parse_redact("all") == ("email", "phone", "card", "ip_address", "api_key")
    assert parse_redact("EMAIL, ip") == ("email", "ip_address")
    assert parse_redact(None) == ()
    with pytest.raises(DataError, match="unknown kind"):
        parse_redact("EMAIL,SSN")


def _match(kind, start, text):
    return SimpleNamespace(kind=kind, start=start, text=text)


def test_redact_replaces_spans_with_typed_placeholders_and_skips_overlaps():
    text = "mail a@b.io or call 555-123-4567 from 10.0.0.1"

    def find(t):
        return [_match("email", 5, "a@b.io"), _match("phone", 20, "555-123-4567"),
                _match("ip_address", 38, "10.0.0.1"), _match("phone", 21, "55-123")]
    out, counts = redact_text(text, ("email", "phone", "ip_address"), find)
    assert out == "mail [EMAIL] or call [PHONE] from [IP]"
    assert counts == {"[EMAIL]": 1, "[PHONE]": 1, "[IP]": 1}
    out, _ = redact_text(text, ("email",), find)
    assert out == "mail [EMAIL] or call 555-123-4567 from 10.0.0.1"


def test_redact_with_the_project_detector():
    out, counts = redact_text("write to jane.doe@gmail.com", ("email",))
    assert out == "write to [EMAIL]" and counts == {"[EMAIL]": 1}


def test_clean_rows_logs_every_change_in_row_order():
    rows = [{"messages": [{"role": "user", "content": " hi  there "}], "label": "a"},
            {"messages": [{"role": "user", "content": "Hi there"}], "label": "a"},
            {"messages": [], "label": None},
            {"messages": [{"role": "user", "content": "ok"}], "label": None}]
    kept, cleaned, changes = clean_rows(rows, [1, 2, 3, 4],
                                        CleanOptions(missing={"label": "fill:none"}))
    assert kept == [0, 3]
    assert cleaned[0]["messages"][0]["content"] == "hi there"
    assert cleaned[1]["label"] == "none"
    assert rows[0]["messages"][0]["content"] == " hi  there "  # the input is not modified
    assert changes == [
        Change(1, "normalize", "messages[0].content", "whitespace"),
        Change(2, "drop", "", "duplicate of row 1 (exact)"),
        Change(3, "drop", "", "empty row: no field has a value"),
        Change(4, "fill", "label", "missing value filled with 'none'"),
    ]


def test_star_rule_and_dedup_fields():
    rows = [{"a": "x", "b": "1"}, {"a": "x", "b": "2"}, {"a": "", "b": "3"}]
    kept, _, changes = clean_rows(rows, [2, 3, 4], CleanOptions(missing={"*": "drop"}))
    assert kept == [0, 1] and changes == [Change(4, "drop", "a", "missing value")]
    kept, _, _ = clean_rows(rows, [2, 3, 4], CleanOptions(dedup_fields=["a"]))
    assert kept == [0, 2]


def test_change_log_is_csv_with_quoting():
    text = change_log([Change(3, "redact", "text", "1 [PHONE], 1 [EMAIL]")])
    assert text == 'row,action,field,reason\n3,redact,text,"1 [PHONE], 1 [EMAIL]"\n'


def test_clean_file_csv_leaves_input_and_refuses_to_overwrite_it(tmp_path):
    src = tmp_path / "in.csv"
    with src.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["text", "label"], ["  Hello ", "1"], ["hello", "1"], ["bye", ""]])
    before = src.read_bytes()
    out = tmp_path / "out" / "clean.jsonl"
    summary = clean_file(src, out, CleanOptions(missing={"label": "drop"}))
    assert src.read_bytes() == before
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {"text": "Hello", "label": "1"}]
    assert summary["rows_in"] == 3 and summary["rows_out"] == 1
    assert summary["actions"] == {"normalize": 1, "drop": 2}
    assert (tmp_path / "out" / "clean.changes.csv").is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    with pytest.raises(DataError, match="never changed"):
        clean_file(src, src)
    with pytest.raises(DataError, match="never changed"):
        clean_file(src, out, log=src)
    with pytest.raises(DataError, match="no such column"):
        clean_file(src, out, CleanOptions(missing={"lable": "drop"}))
    with pytest.raises(DataError, match="cannot write rows"):
        clean_file(src, tmp_path / "out.txt")
    assert src.read_bytes() == before
