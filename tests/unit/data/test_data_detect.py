"""Format detection of label + text tables, and unused columns reported once per file."""

from __future__ import annotations

import csv
import json

import pytest

from tunelab.data.example import Message
from tunelab.data.extra_formats import HUMAN
from tunelab.data.formats import FORMATS, READS, reads, to_example
from tunelab.data.load import check_file, load_examples, load_mixture
from tunelab.gate.check import check_data
from tunelab.tracking.reporter import Recorder

TEXTS = ["a fine film", "dull and long", "the cast is great"]
LABELS = ["pos", "neg", "pos"]


def write_rows(path, rows):
    """Rows as JSONL, or as CSV/TSV with the first row's keys as the header."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]),
                                delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
    return path


def table(path, **extra):
    """A text + label table of three rows, with the given extra columns (one value each)."""
    return write_rows(path, [{"text": t, "label": lab, **{k: f"{v}{i}" for k, v in extra.items()}}
                             for i, (t, lab) in enumerate(zip(TEXTS, LABELS, strict=True))])


def unused_findings(findings):
    return [f for f in findings if f.code == "unused_columns"]


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_a_text_and_label_table_is_classification(tmp_path, suffix):
    path = table(tmp_path / f"data{suffix}")
    examples, findings = check_file(path)
    assert findings == []  # every column is read: nothing to report
    loaded = load_examples(path)
    assert [e.messages for e in loaded] == [[Message("user", t), Message("assistant", lab)]
                                            for t, lab in zip(TEXTS, LABELS, strict=True)]
    assert [e.meta for e in loaded] == [{"label": lab} for lab in LABELS]
    assert all(e.text is None for e in loaded)
    assert check_data(path, min_rows=1).format == "classification"  # what `data check` says


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_a_text_label_and_idx_table_is_classification_and_reports_idx(tmp_path, suffix):
    path = table(tmp_path / f"data{suffix}", idx="")
    examples, findings = check_file(path)
    noun = "key" if suffix == ".jsonl" else "column"
    assert [(f.line, f.field, f.code, f.severity, f.message) for f in findings] == [
        (0, None, "unused_columns", "warning",
         f"{noun} 'idx' is not used by the classification format (kept as metadata for "
         "slices)")]
    assert [e.messages[0].content for e in examples] == TEXTS
    assert [e.meta for e in examples] == [{"label": lab, "idx": str(i)}
                                          for i, lab in enumerate(LABELS)]
    assert str(findings[0]) == (f"{path}:0 -: [unused_columns] {noun} 'idx' is not used by the "
                                "classification format (kept as metadata for slices)")


def test_a_text_only_file_reports_nothing_unused(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    assert check_file(path)[1] == []
    reporter = Recorder()
    assert len(load_examples(path, reporter=reporter)) == 3 and reporter.lines == []


def test_format_text_keeps_the_text_and_reports_the_label_naming_classification(tmp_path):
    path = table(tmp_path / "data.tsv")
    examples, findings = check_file(path, "text")
    assert [e.text for e in examples] == TEXTS
    assert [e.meta for e in examples] == [{"label": lab} for lab in LABELS]
    assert [(f.line, f.code, f.severity, f.message) for f in findings] == [
        (0, "unused_columns", "warning",
         "column 'label' is not used by the text format (kept as metadata for slices; "
         "classification would use 'label': set format: classification)")]
    reporter = Recorder()  # the training load path: once for the file, on the reporter
    load_examples(path, "text", reporter=reporter)
    assert reporter.lines == [f"warning: {findings[0]}"]
    assert check_data(path, "text", min_rows=1).format == "text"


def test_several_text_columns_read_the_first_and_report_the_others(tmp_path):
    path = write_rows(tmp_path / "d.jsonl",
                      [{"sentence": "s", "text": "t", "label": "pos", "review": "r"}])
    (example,), findings = check_file(path)
    assert example.messages == [Message("user", "t"), Message("assistant", "pos")]
    assert [f.message for f in unused_findings(findings)] == [
        "keys 'sentence', 'review' are not used by the classification format (kept as "
        "metadata for slices)"]


def test_alpaca_rows_stay_alpaca_and_report_their_extra_keys(tmp_path):
    rows = [{"instruction": "Add", "input": "2 and 2", "output": "4", "label": "math",
             "source": "web"},
            {"instruction": "Greet", "input": "", "output": "hi", "label": "chat",
             "source": "book"}]
    path = write_rows(tmp_path / "d.jsonl", rows)
    examples, findings = check_file(path)
    assert [e.messages[0].content for e in examples] == ["Add\n\n2 and 2", "Greet"]
    assert [(f.line, f.code, f.message) for f in findings] == [
        (0, "unused_columns", "keys 'label', 'source' are not used by the alpaca format (kept "
         "as metadata for slices; classification would use 'label')")]


PROMPT = f"{HUMAN} Hi\n\nAssistant:"
# One valid row per format, each with every optional key the format reads.
ROWS = {
    "chat": {"messages": [{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Yo"}]},
    "alpaca": {"instruction": "Add", "input": "2 and 2", "output": "4", "system": "Be brief."},
    "prompt_completion": {"prompt": "1+1", "completion": "2"},
    "sharegpt": {"conversations": [{"from": "human", "value": "Hi"},
                                   {"from": "gpt", "value": "Yo"}], "system": "Be brief."},
    "text": {"text": "a document"},
    "classification": {"text": "a fine film", "label": "pos"},
    "preference": {"chosen": PROMPT + " Hello.", "rejected": PROMPT + " Go away."},
    "self_instruct": {"instruction": "Add", "instances": [{"input": "2 and 2", "output": "4"}]},
}


def test_every_format_has_a_row_here_and_reads_every_key_it_uses():
    assert set(ROWS) == set(FORMATS) == set(READS)
    for fmt, row in ROWS.items():
        example, findings = to_example(row, fmt, "d.jsonl", 1)
        assert example is not None and findings == []
        # whatever the builder did not keep in meta, it read; what it kept, `reads` names
        assert set(row) - set(example.meta) <= reads(fmt, row)


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unused_column_is_always_reported(tmp_path, fmt, explicit):
    rows = [dict(ROWS[fmt], notes=f"row {i}") for i in range(2)]
    path = write_rows(tmp_path / "d.jsonl", rows)
    examples, findings = check_file(path, fmt if explicit else "auto")
    assert len(examples) == 2 and all(e.meta["notes"] == f"row {e.line - 1}" for e in examples)
    assert [(f.line, f.code, f.severity, f.message) for f in findings] == [
        (0, "unused_columns", "warning",
         f"key 'notes' is not used by the {fmt} format (kept as metadata for slices)")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_keys_a_format_reads_are_never_reported(tmp_path, fmt):
    path = write_rows(tmp_path / "d.jsonl", [ROWS[fmt]])
    assert check_file(path, fmt)[1] == []


def test_unused_columns_are_one_finding_for_the_file_not_one_per_row(tmp_path):
    rows = [{"text": f"text {i}", "label": str(i % 2), "idx": i} for i in range(500)]
    rows[7]["source"] = "web"  # a key of one row only is reported too, in the same finding
    path = write_rows(tmp_path / "d.jsonl", rows)
    examples, findings = check_file(path)
    assert len(examples) == 500
    (finding,) = findings
    assert finding.message.startswith("keys 'idx', 'source' are not used by the "
                                      "classification format")
    # one warning for the file (line 0) naming the rows it concerns; a warning rejects none
    assert finding.line == 0 and not finding.is_error
    assert finding.row_lines == tuple(range(1, 501))
    reporter = Recorder()
    load_mixture([(path, "auto", 1.0), (path, "auto", 0.5)], seed=0, reporter=reporter)
    assert [line.split(" [")[1].split("]")[0] for line in reporter.lines] == [
        "unused_columns", "unused_columns"]  # once per source file


def test_null_values_are_not_unused_columns(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", [{"text": "a", "note": None},
                                             {"text": "b", "note": None}])
    assert check_file(path)[1] == []


def test_rejected_rows_add_no_unused_columns(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}] * 2)
    _, findings = check_file(path, "chat")  # every row lacks messages: one error says it
    assert [f.code for f in findings] == ["missing_messages"]


def test_the_gate_counts_and_verdict_are_those_of_the_rows(tmp_path):
    rows = [{"text": f"review number {i} of the film", "label": ["pos", "neg"][i % 2],
             "idx": i} for i in range(12)]
    result = check_data(write_rows(tmp_path / "d.jsonl", rows))
    assert result.ok and (result.rows_read, result.accepted, result.rejected) == (12, 12, 0)
    assert result.counts() == {"unused_columns": 1} and len(result.warnings) == 1
    few = check_data(write_rows(tmp_path / "few.jsonl", rows[:3]))
    # a note on the file is not a problem of every row: too few rows is still said
    assert [f.code for f in few.findings] == ["unused_columns", "too_few_rows"]
