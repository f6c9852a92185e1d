"""Tables: reading any data file as rows, and writing rows back in every format, atomically."""

import json

import pytest

from tunelab.data.readers import read_records
from tunelab.data.table import (
    label_text,
    read_table,
    row_text,
    text_columns,
    value_text,
    write_rows,
)
from tunelab.errors import DataError

ROWS = [{"text": "héllo, \"world\"\nline two", "label": 1, "tags": ["a", "b"]},
        {"text": "tab\there", "label": None, "extra": True}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_rows_round_trip_through_every_format(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    write_rows(path, ROWS)
    table = read_table(path)
    assert len(table) == 2
    if suffix in (".jsonl", ".json", ".parquet"):
        assert table.rows[0]["text"] == ROWS[0]["text"] and table.rows[0]["label"] == 1
    else:  # cells are text: numbers and lists as JSON, null as empty
        assert table.rows[0] == {"text": ROWS[0]["text"], "label": "1", "tags": '["a", "b"]',
                                 "extra": ""}
        assert table.rows[1]["extra"] == "true" and table.rows[1]["label"] == ""
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_read_table_lists_every_unreadable_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\nnot json\n[1, 2]\n')
    with pytest.raises(DataError) as e:
        read_table(path)
    assert len(e.value.findings) == 2
    assert f"{path}:2" in e.value.findings[0] and "row_not_object" in e.value.findings[1]


def test_read_table_caps_the_unreadable_rows_per_code(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("[1]\n" * 500)
    with pytest.raises(DataError) as e:
        read_table(path)
    assert "500 row(s) cannot be read" in e.value.message
    assert len(e.value.findings) == 21
    assert e.value.findings[-1] == "... and 480 more [row_not_object] error(s)"


def test_texts_and_labels():
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant",
                                                             "content": "hello"}],
           "label": 2.0}
    assert value_text(row["messages"]) == "user\nhi\nassistant\nhello"
    assert row_text(row, ["messages", "label"]).endswith("hello\n2")
    assert [label_text(v) for v in (0, "0", 1.0, True, None, [1])] == [
        "0", "0", "1", "true", "", "[1]"]


def test_text_columns_default_and_unknown(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a", "label": 1, "augmented": "swap"}) + "\n")
    table = read_table(path)
    assert text_columns(table, None, ["label"]) == ["text"]
    with pytest.raises(DataError, match="did you mean 'text'"):
        text_columns(table, ["txt"])
    with pytest.raises(DataError, match="no column is left"):
        text_columns(table, None, ["text", "label"])
    assert [r for _, r in read_records(path)][0]["augmented"] == "swap"
