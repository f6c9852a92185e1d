"""check_data: every problem of a file with its line, field and code; rows accounted for."""

from __future__ import annotations

import json

import pytest

from tunelab.errors import DataError
from tunelab.gate.check import MIN_USABLE_ROWS, check_data


def chat(user="How do I reset my password?", answer="Open settings and pick Reset.",
         system=None, **extra):
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": msgs, **extra}


def distinct_chats(n):
    """n rows that are neither exact nor near duplicates of each other."""
    topics = ["invoice", "parcel", "password", "refund", "screen", "login", "battery", "order",
              "coupon", "address", "warranty", "printer", "upgrade", "receipt", "delivery"]
    return [chat(f"Question {i} about my {topics[i % len(topics)]} {'x' * i}?",
                 f"Answer {i}: {topics[(i * 7) % len(topics)]} steps {i * 31}.")
            for i in range(n)]


def write_jsonl(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def found(result):
    return [(f.line, f.field, f.code, f.severity) for f in result.findings]


def test_a_clean_file_has_no_findings(tmp_path):
    result = check_data(write_jsonl(tmp_path, distinct_chats(12)))
    assert result.findings == [] and result.ok
    assert (result.rows_read, result.accepted, result.rejected) == (12, 12, 0)
    assert result.format == "chat"
    assert result.columns == {"messages": {"present": 12, "missing": 0, "empty": 0}}
    assert result.notes == ["token lengths were not checked: no tokenizer was given"]


@pytest.mark.parametrize("line, code, field", [
    ("{not json", "invalid_json", None),
    ('["a list"]', "row_not_object", None),
    ('{"messages": "hello"}', "messages_not_list", "messages"),
    ('{"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}', "missing_role",
     "messages[0].role"),
    ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}', "missing_content",
     "messages[0].content"),
    ('{"messages": [{"role": "user", "content": "a", "name": "x"}, '
     '{"role": "assistant", "content": "b"}]}', "unknown_key", "messages[0].name"),
    ('{"messages": [{"role": "human", "content": "a"}, {"role": "assistant", "content": "b"}]}',
     "unknown_role", "messages[0].role"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]}',
     "empty_content", "messages[1].content"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "no_assistant", "messages"),
    ('{"messages": [{"role": "user", "content": "a"}, '
     '{"role": "assistant", "content": "b", "weight": 0.5}]}', "bad_weight", "messages[1].weight"),
    ('{"prompt": "a", "completion": "b"}', "mixed_formats", None),
])
def test_each_row_error_is_reported_on_its_line(tmp_path, line, code, field):
    rows = distinct_chats(12)
    rows.insert(5, line)
    result = check_data(write_jsonl(tmp_path, rows))
    assert (6, field, code, "error") in found(result)
    assert (result.rows_read, result.accepted, result.rejected) == (13, 12, 1)
    assert not result.ok


def test_missing_messages_when_the_format_is_chat(tmp_path):
    rows = distinct_chats(12) + [{"msgs": []}]
    result = check_data(write_jsonl(tmp_path, rows), format="chat")
    assert (13, "messages", "missing_messages", "error") in found(result)


def test_invalid_utf8_names_the_byte(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [json.dumps(r).encode() for r in distinct_chats(11)]
    p.write_bytes(b"\n".join(rows[:3] + [b'{"messages": "caf\xe9"}'] + rows[3:]) + b"\n")
    result = check_data(p)
    (bad,) = result.errors
    assert (bad.line, bad.code) == (4, "invalid_utf8") and "0xe9" in bad.message


def test_empty_file_is_one_error_and_not_also_too_few_rows(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n  \n")
    result = check_data(p)
    assert found(result) == [(0, None, "empty_file", "error")]
    assert result.rows_read == 0


def test_too_few_usable_rows(tmp_path):
    rows = distinct_chats(MIN_USABLE_ROWS - 1) + ["{bad"]
    result = check_data(write_jsonl(tmp_path, rows))
    assert found(result)[0] == (0, None, "too_few_rows", "error")
    assert f"only {MIN_USABLE_ROWS - 1} usable row(s) of {MIN_USABLE_ROWS}" in result.findings[0].message
    assert check_data(write_jsonl(tmp_path, distinct_chats(3)), min_rows=3).ok


def test_no_system_only_where_other_rows_have_one(tmp_path):
    rows = distinct_chats(12)
    for row in rows[1:]:
        row["messages"].insert(0, {"role": "system", "content": "Be brief."})
    result = check_data(write_jsonl(tmp_path, rows))
    assert found(result) == [(1, "messages", "no_system", "warning")]
    assert result.ok  # warnings do not fail the check
    assert check_data(write_jsonl(tmp_path, distinct_chats(12), "all.jsonl")).findings == []


def test_no_user_message(tmp_path):
    rows = distinct_chats(12)
    rows[2]["messages"] = [{"role": "system", "content": "Be brief."},
                           {"role": "assistant", "content": "Hello there."}]
    rows[3]["messages"].insert(0, {"role": "system", "content": "Be brief."})
    result = check_data(write_jsonl(tmp_path, rows))
    assert (3, "messages", "no_user", "warning") in found(result)


def test_too_long_uses_the_chat_template(tmp_path, tiny_tokenizer):
    rows = distinct_chats(12)
    rows[7] = chat("Summarize.", "word " * 300)
    result = check_data(write_jsonl(tmp_path, rows), tokenizer=tiny_tokenizer, max_length=200)
    assert found(result) == [(8, None, "too_long", "warning")]
    rendered = tiny_tokenizer.apply_chat_template(rows[7]["messages"], tokenize=False)
    tokens = len(tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert result.token_lengths[7] == tokens and f"{tokens} tokens" in result.findings[0].message
    assert result.as_dict()["tokens"]["over_max_length"] == 1


def test_exact_and_near_duplicates_point_at_the_first_row(tmp_path):
    rows = distinct_chats(12)
    rows.append(dict(rows[2]))  # line 13: the same as line 3
    near = json.loads(json.dumps(rows[4]))
    near["messages"][1]["content"] += "!"  # line 14: one character more than line 5
    rows.append(near)
    result = check_data(write_jsonl(tmp_path, rows))
    assert found(result) == [(13, None, "exact_duplicate", "warning"),
                             (14, None, "near_duplicate", "warning")]
    assert "line 3" in result.findings[0].message and "line 5" in result.findings[1].message
    assert [f.code for f in check_data(result.source, near_duplicates=False).findings] == \
        ["exact_duplicate"]


def test_duplicates_ignore_a_shared_system_prompt(tmp_path):
    rows = distinct_chats(12)
    for row in rows:
        row["messages"].insert(0, {"role": "system", "content": "You are a support agent. " * 40})
    assert check_data(write_jsonl(tmp_path, rows)).findings == []


def test_classification_conflicting_labels(tmp_path):
    p = tmp_path / "d.tsv"
    lines = [f"{i % 2}\treview number {i} says {'good ' * (i % 5)}film {i * 13}" for i in range(12)]
    lines.append("0\treview number 3 says good good good film 39")  # line 3+... same text
    p.write_text("label\tsentence\n" + "\n".join(lines) + "\n")
    result = check_data(p)
    assert result.format == "classification"
    codes = {(f.line, f.code) for f in result.findings}
    assert (14, "conflicting_labels") in codes


def test_pii_is_reported_with_the_field_and_masked(tmp_path):
    rows = distinct_chats(12)
    rows[1] = chat("Mail me at jane.roe@mailbox.org or call +1 415 555 0132",
                   "Will do.", ticket={"card": "4111 1111 1111 1111"})
    result = check_data(write_jsonl(tmp_path, rows))
    assert found(result) == [(0, None, "unused_columns", "warning"),  # the 'ticket' key
                             (2, "messages[0].content", "pii_email", "warning"),
                             (2, "messages[0].content", "pii_phone", "warning"),
                             (2, "ticket.card", "pii_card", "warning")]
    assert result.findings[0].message.startswith("key 'ticket' is not used by the chat format")
    text = " ".join(f.message for f in result.findings)
    assert "jane.roe@" not in text and "4111 1111 1111 1111" not in text and "1111" in text


def test_json_report_gives_every_finding_a_line(tmp_path):
    rows = distinct_chats(4) + ["{bad"]
    report = check_data(write_jsonl(tmp_path, rows)).as_dict()
    assert report["ok"] is False and report["rows_read"] == 5 and report["rejected"] == 1
    assert [(f["line"], f["code"]) for f in report["findings"]] == [(0, "too_few_rows"),
                                                                     (5, "invalid_json")]
    assert report["counts"] == {"too_few_rows": 1, "invalid_json": 1}
    json.dumps(report)  # serializable


def test_findings_are_sorted_by_line(tmp_path):
    rows = distinct_chats(12)
    rows[9] = "{bad"
    rows.append(dict(rows[0]))
    rows[3] = chat("Call (555) 123-4567 please", "ok")
    lines = [f.line for f in check_data(write_jsonl(tmp_path, rows)).findings]
    assert lines == sorted(lines) and len(lines) == 3


def test_missing_file_and_unknown_format_raise(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        check_data(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="not one of auto"):
        check_data(write_jsonl(tmp_path, distinct_chats(1)), format="xml")


def test_a_row_on_the_line_of_an_error_is_rejected_not_also_accepted(tmp_path):
    # The array is never closed: its last row parses, but the error is on its line.
    p = tmp_path / "d.json"
    p.write_text("[\n" + ",\n".join(json.dumps(r) for r in distinct_chats(3)))
    result = check_data(p, min_rows=1)
    assert [(f.line, f.code) for f in result.errors] == [(4, "invalid_json")]
    assert [e.line for e in result.examples] == [2, 3]
    assert (result.rows_read, result.accepted, result.rejected) == (3, 2, 1)


def test_a_5000_row_csv_missing_a_column_is_one_finding_naming_it(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("instruction,answer\n" + "".join(f"question {i},answer {i}\n"
                                                  for i in range(5000)))
    result = check_data(p)
    assert [(f.line, f.code) for f in result.findings] == [(0, "unknown_format")]
    assert "lacks 'output' (or 'response')" in result.findings[0].message
    assert "the columns of all 5,000 rows ('instruction', 'answer')" in result.findings[0].message
    assert (result.rows_read, result.accepted, result.rejected) == (5000, 0, 5000)
    assert result.counts() == {"unknown_format": 1}  # and no too_few_rows on top


def test_json_array_findings_of_the_check_point_at_their_field(tmp_path):
    rows = distinct_chats(12)
    rows[3] = {"messages": [{"role": "assistant", "content": "Mail me at jane.roe@mailbox.org"}]}
    p = tmp_path / "d.json"
    text = json.dumps(rows, indent=2)
    p.write_text(text)
    lines = text.split("\n")
    start = [n for n, line in enumerate(lines, start=1) if line == "  {"][3]
    content = next(n for n, line in enumerate(lines, start=1) if "jane.roe@" in line)
    result = check_data(p)
    assert [(f.line, f.field, f.code) for f in result.findings] == [
        (start + 1, "messages", "no_user"), (content, "messages[0].content", "pii_email")]
    assert [f.row_lines for f in result.findings] == [(start,), (start,)]
    assert (result.rows_read, result.accepted, result.rejected) == (12, 12, 0)
