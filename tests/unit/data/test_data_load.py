"""load_examples and check_file: every format from every container, and whole-file reports."""

from __future__ import annotations

import csv
import json

import pytest

from tunelab.data.example import Message
from tunelab.data.load import check_file, load_examples
from tunelab.errors import DataError

ROWS = {
    "chat": [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello", "weight": 1}], "id": "a"},
        {"messages": [{"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}], "id": "b"},
    ],
    "alpaca": [
        {"instruction": "Add", "input": "2 and 2", "output": "4"},
        {"instruction": "Say hi", "input": "", "output": "hi"},
    ],
    "prompt_completion": [{"prompt": "Q: 1+1", "completion": "2"},
                          {"prompt": "Q: 2+2", "completion": "4"}],
    "sharegpt": [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}],
         "id": "x"},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                           {"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}],
         "id": "y"},
    ],
    "text": [{"text": "first document", "source": "web"}, {"text": "second", "source": "book"}],
    "classification": [{"text": "a fine film", "label": "pos"}, {"text": "dull", "label": "neg"}],
}

EXPECTED = {
    "chat": [[("system", "Be brief.", None), ("user", "Hi", None), ("assistant", "Hello", 1.0)],
             [("user", "2+2?", None), ("assistant", "4", None)]],
    "alpaca": [[("user", "Add\n\n2 and 2", None), ("assistant", "4", None)],
               [("user", "Say hi", None), ("assistant", "hi", None)]],
    "prompt_completion": [[("user", "Q: 1+1", None), ("assistant", "2", None)],
                          [("user", "Q: 2+2", None), ("assistant", "4", None)]],
    "sharegpt": [[("user", "Hi", None), ("assistant", "Yo", None)],
                 [("user", "a", None), ("assistant", "b", None), ("user", "c", None),
                  ("assistant", "d", None)]],
    "text": [[], []],
    "classification": [[("user", "a fine film", None), ("assistant", "pos", None)],
                       [("user", "dull", None), ("assistant", "neg", None)]],
}
META = {"chat": [{"id": "a"}, {"id": "b"}], "alpaca": [{}, {}], "prompt_completion": [{}, {}],
        "sharegpt": [{"id": "x"}, {"id": "y"}], "text": [{"source": "web"}, {"source": "book"}],
        "classification": [{"label": "pos"}, {"label": "neg"}]}


def write(tmp_path, rows, container):
    """Write rows as the container; return the path and each row's expected line."""
    if container == "jsonl":
        p = tmp_path / "d.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return p, list(range(1, len(rows) + 1))
    if container == "json":
        p = tmp_path / "d.json"
        text = json.dumps(rows, indent=2)
        p.write_text(text)
        return p, [n for n, line in enumerate(text.split("\n"), start=1) if line == "  {"]
    if container == "csv":
        p = tmp_path / "d.csv"
        with p.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else v
                                 for k, v in r.items()})
        return p, list(range(2, len(rows) + 2))
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), p)
    return p, list(range(1, len(rows) + 1))


@pytest.mark.parametrize("container", ["jsonl", "json", "csv", "parquet"])
@pytest.mark.parametrize("fmt", list(ROWS))
@pytest.mark.parametrize("explicit", [False, True])
def test_every_format_from_every_container(tmp_path, fmt, container, explicit):
    path, lines = write(tmp_path, ROWS[fmt], container)
    examples = load_examples(path, fmt if explicit else "auto")
    assert [e.line for e in examples] == lines
    assert all(e.source == str(path) for e in examples)
    assert [[(m.role, m.content, m.weight) for m in e.messages] for e in examples] == EXPECTED[fmt]
    assert [e.meta for e in examples] == META[fmt]
    assert [e.text for e in examples] == (["first document", "second"] if fmt == "text"
                                          else [None, None])


BAD_FILE = "\n".join([
    json.dumps({"messages": [{"role": "user", "content": "a"},
                             {"role": "assistant", "content": "b"}]}),
    '{"messages": [',
    json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}),
    "",
    json.dumps({"messages": [{"role": "user", "content": "a"},
                             {"role": "assistant", "content": "b", "weight": 0.5}]}),
    json.dumps({"messages": [{"role": "user", "content": "c"},
                             {"role": "assistant", "content": "d"}]}),
    json.dumps({"messages": "hi"}),
    "[1, 2]",
    json.dumps({"instruction": "a", "output": "b"}),
    json.dumps({"messages": [{"role": "user", "content": "a"}]}),
]) + "\n"


def test_a_file_with_several_bad_rows_names_every_line_field_and_code(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(BAD_FILE)
    with pytest.raises(DataError) as info:
        load_examples(path)
    error = info.value
    assert [line.split(": [")[0] for line in error.findings] == [
        f"{path}:2 -", f"{path}:3 messages[1].role", f"{path}:5 messages[1].weight",
        f"{path}:7 messages", f"{path}:8 -", f"{path}:9 -", f"{path}:10 messages"]
    codes = [line.split(": [", 1)[1].split("]")[0] for line in error.findings]
    assert codes == ["invalid_json", "unknown_role", "bad_weight", "messages_not_list",
                     "row_not_object", "mixed_formats", "no_assistant"]
    assert f"{path}: 7 error(s) on 7 line(s)" in str(error)
    assert "tunelab data check" in error.hint
    for finding in error.findings:
        assert finding in str(error)

    examples, findings = check_file(path)
    assert [e.line for e in examples] == [1, 6]
    assert len(findings) == 7


def test_mixed_formats_names_the_first_format_and_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"nope": 1}\n{"text": "a"}\n{"prompt": "p", "completion": "c"}\n')
    examples, findings = check_file(path)
    assert [e.line for e in examples] == [2]
    assert [(f.line, f.code) for f in findings] == [(1, "unknown_format"), (3, "mixed_formats")]
    assert "the file is text from line 2" in findings[1].message
    assert "text (text)" in findings[0].message


def test_auto_reports_missing_fields_of_the_file_format(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    _, findings = check_file(path)
    assert [(f.line, f.field, f.code) for f in findings] == [(2, "output", "missing_field")]


def test_explicit_format_that_does_not_fit_names_the_missing_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n')
    with pytest.raises(DataError) as info:
        load_examples(path, "chat")
    assert info.value.findings == [
        f"{path}:1 messages: [missing_messages] the row has no 'messages' (a list of {{role, "
        "content} objects); its keys are 'text'; this row looks like text: load the file "
        "with format='text'"]


def test_unknown_format_name_raises(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n')
    with pytest.raises(DataError, match="format 'jsonl' is not one of auto, chat"):
        load_examples(path, "jsonl")


def test_warnings_are_reported_and_do_not_stop_the_load(tmp_path):
    from tunelab.tracking.reporter import Recorder

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": ""},
                                             {"role": "assistant", "content": "b"}]}) + "\n")
    # Warnings go to the caller's Reporter (the CLI shows them on stderr), not to logging.
    reporter = Recorder()
    examples = load_examples(path, reporter=reporter)
    assert examples[0].messages[1] == Message("assistant", "b")
    text = "\n".join(reporter.lines)
    assert "[empty_content]" in text and f"{path}:1" in text


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="1 error"):
        load_examples(path)


def write_csv(path, header, rows):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_a_column_missing_from_every_row_is_one_finding_naming_it(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["instruction", "answer"],
                     [[f"question {i}", f"answer {i}"] for i in range(5000)])
    examples, findings = check_file(path)
    assert examples == []
    (finding,) = findings
    assert (finding.line, finding.code, finding.field) == (0, "unknown_format", None)
    assert finding.row_lines == tuple(range(2, 5002))  # every row is rejected by it
    assert ("the columns of all 5,000 rows ('instruction', 'answer'); the closest is alpaca, "
            "which lacks 'output' (or 'response')") in finding.message
    with pytest.raises(DataError) as info:
        load_examples(path)
    assert len(info.value.findings) == 1
    assert f"{path}: 1 error(s) on 5,000 line(s)" in info.value.message


def test_a_field_the_chosen_format_needs_missing_from_every_row_is_one_finding(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["instruction", "Output"],
                     [[f"question {i}", f"answer {i}"] for i in range(30)])
    _, findings = check_file(path, "alpaca")
    assert [(f.line, f.field, f.code) for f in findings] == [(0, "output", "missing_field")]
    assert findings[0].message.startswith(
        "all 30 rows lack 'output' (or 'response'), which alpaca rows need; the columns are "
        "'instruction', 'Output'; rename 'Output' to 'output'")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a"}\n{"text": "b"}\n')
    _, findings = check_file(jsonl, "chat")
    assert [(f.line, f.field, f.code) for f in findings] == [(0, "messages", "missing_messages")]
    assert "the rows look like text: load the file with format='text'" in findings[0].message


def test_a_field_missing_from_some_rows_stays_a_finding_per_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n'
                    '{"instruction": "d"}\n')
    _, findings = check_file(path)
    assert [(f.line, f.field, f.code) for f in findings] == [(2, "output", "missing_field"),
                                                             (3, "output", "missing_field")]
    one = tmp_path / "one.jsonl"  # one row is its own problem, not the file's
    one.write_text('{"nope": 1}\n')
    assert [f.line for f in check_file(one)[1]] == [1]


def test_per_row_errors_are_capped_per_code_in_the_load_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["instruction", "output"],
                     [[f"question {i}", ""] for i in range(5000)])
    with pytest.raises(DataError) as info:
        load_examples(path)
    lines = info.value.findings
    assert len(lines) == 21 and all("[empty_content]" in line for line in lines)
    assert lines[0].startswith(f"{path}:2 output: [empty_content]")
    assert lines[-1] == "... and 4,980 more [empty_content] error(s)"
    assert f"{path}: 5,000 error(s) on 5,000 line(s)" in info.value.message


def test_json_array_findings_point_at_the_field_line(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {"messages": [{"role": "user", "content": "c"},
                          {"role": "bot", "content": "d", "weight": 2}]},
            {"messages": [{"role": "user"}, {"role": "assistant", "content": "e"}]}]
    path = tmp_path / "d.json"
    text = json.dumps(rows, indent=2)
    path.write_text(text)
    lines = text.split("\n")

    def line_of(fragment, after=0):
        return next(n for n, line in enumerate(lines, start=1)
                    if n > after and fragment in line)

    second = line_of("{", after=line_of('"content": "b"'))
    third = line_of("{", after=line_of('"weight": 2'))
    examples, findings = check_file(path)
    assert [e.line for e in examples] == [2]
    assert [(f.line, f.field, f.code, f.row_lines) for f in findings] == [
        (line_of('"role": "bot"'), "messages[1].role", "unknown_role", (second,)),
        (line_of('"weight": 2'), "messages[1].weight", "bad_weight", (second,)),
        # the turn has no content: the finding is on the turn itself
        (line_of('"role": "user"', after=third) - 1, "messages[0].content", "missing_content",
         (third,))]
    with pytest.raises(DataError, match="3 error\\(s\\) on 2 line\\(s\\)"):
        load_examples(path)
