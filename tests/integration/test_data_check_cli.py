"""`tunelab data check` and `tunelab data profile` through the real entry point."""

from __future__ import annotations

import argparse
import json

import pytest

from shared_data import shared_file
from tunelab.cli import data_check, exits
from tunelab.errors import TunelabError


def _wired() -> bool:
    from tunelab.cli.main import build_parser

    try:
        build_parser().parse_args(["data", "check", "x.jsonl"])
    except SystemExit:
        return False
    return True


def cli(argv: list[str]) -> int:
    """Run the `tunelab` command; until `data` is wired into main, an equivalent parser."""
    from tunelab.cli.main import main

    if _wired():
        return main(argv)
    parser = argparse.ArgumentParser(prog="tunelab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    data = sub.add_parser("data").add_subparsers(dest="data_cmd", required=True)
    data_check.register(data)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TunelabError as e:  # as tunelab.cli.main does
        print(f"error: {e}")
        return exits.exit_code(e)


def clean_rows(n=12):
    return [{"messages": [{"role": "user", "content": f"Where is parcel {i} {'?' * i}"},
                          {"role": "assistant", "content": f"Parcel {i} ships on day {i * 3}."}]}
            for i in range(n)]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_check_json_on_the_openai_toy_chat_file(tiny_model_dir, capsys):
    path = shared_file("openai_toy_chat/toy_chat_fine_tuning.jsonl")
    code = cli(["data", "check", str(path), "--json", "--model", str(tiny_model_dir)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    (file,) = report["files"]
    assert [(f["line"], f["code"]) for f in file["findings"]] == [
        (0, "too_few_rows"), (3, "no_system"), (4, "no_user"), (5, "too_long")]
    assert all("line" in f for f in file["findings"])
    assert file["tokens"]["max"] > 5 * file["tokens"]["max_length"]  # line 5: far over


def test_check_a_clean_file_exits_0_and_writes_the_report(tmp_path, tiny_model_dir, capsys):
    path = write(tmp_path / "clean.jsonl", clean_rows())
    out = tmp_path / "report"
    assert cli(["data", "check", str(path), "--model", str(tiny_model_dir),
                "--report", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{path}: ok: chat, 12 rows read, 12 accepted, 0 rejected; 0 error(s)" in text
    assert (out / "index.html").is_file()
    pngs = sorted(p.name for p in out.rglob("*.png"))
    assert pngs == ["fields.png", "rows.png", "token_lengths.png", "turns.png"]
    assert all(p.stat().st_size > 2000 for p in out.rglob("*.png"))
    summary = json.loads((out / "profile.json").read_text())
    assert summary["files"][0]["tokens"]["min"] > 0


def test_check_several_files_prints_each_and_fails_on_any_error(tmp_path, capsys):
    good = write(tmp_path / "good.jsonl", clean_rows())
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in clean_rows()) + "{oops\n")
    assert cli(["data", "check", str(good), str(bad), "--model", "none"]) == 1
    text = capsys.readouterr().out
    assert f"error: {bad}:13 -: [invalid_json]" in text
    assert f"{good}: ok" in text and f"{bad}: FAILED" in text
    assert "near duplicates" not in text


def test_warnings_are_capped_per_code_unless_all(tmp_path, capsys):
    rows = clean_rows() + [clean_rows()[0]] * 30
    path = write(tmp_path / "dups.jsonl", rows)
    assert cli(["data", "check", str(path), "--model", "none", "--no-near-dups"]) == 0
    text = capsys.readouterr().out
    assert text.count("[exact_duplicate]") == 21 and "... and 10 more [exact_duplicate]" in text
    assert cli(["data", "check", str(path), "--model", "none", "--all"]) == 0
    assert capsys.readouterr().out.count("[exact_duplicate]") == 30


def test_profile_writes_the_html_report(tmp_path, tiny_model_dir, capsys):
    path = write(tmp_path / "train.jsonl", clean_rows())
    out = tmp_path / "prof"
    assert cli(["data", "profile", str(path), "--model", str(tiny_model_dir),
                "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"][0]["accepted"] == 12 and summary["report"] == str(out / "index.html")
    assert "token_lengths.png" in (out / "index.html").read_text()


def test_a_missing_file_and_an_unknown_model_are_errors_with_a_hint(tmp_path, capsys):
    assert cli(["data", "check", str(tmp_path / "nope.jsonl"), "--model", "none"]) == exits.DATA
    captured = capsys.readouterr()
    assert "no such file" in captured.out + captured.err
    path = write(tmp_path / "d.jsonl", clean_rows())
    assert cli(["data", "check", str(path), "--model", "no-such-model"]) == exits.MODEL
    captured = capsys.readouterr()
    assert "was not found" in captured.out + captured.err


def test_without_the_default_model_lengths_are_skipped_with_a_note(tmp_path, capsys):
    # The isolated TUNELAB_HOME of the test holds no model.
    path = write(tmp_path / "d.jsonl", clean_rows())
    assert cli(["data", "check", str(path)]) == 0
    captured = capsys.readouterr()
    assert "token lengths were not measured" in captured.err


@pytest.mark.real_model
def test_toy_chat_line_5_with_the_real_smollm2_template(capsys, default_model):
    from tunelab.models.catalog import DEFAULT_MODEL

    path = shared_file("openai_toy_chat/toy_chat_fine_tuning.jsonl")
    assert cli(["data", "check", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == DEFAULT_MODEL
    too_long = [f for f in report["files"][0]["findings"] if f["code"] == "too_long"]
    assert [f["line"] for f in too_long] == [5] and "8033 tokens" in too_long[0]["message"]


def test_a_5000_row_csv_missing_a_column_prints_one_error_naming_it(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("instruction,answer\n" + "".join(f"question {i},answer {i}\n"
                                                  for i in range(5000)))
    assert cli(["data", "check", str(path), "--model", "none"]) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {path}:0 -: [unknown_format] no format fits the columns of all "
                      "5,000 rows ('instruction', 'answer'); the closest is alpaca, which lacks "
                      "'output' (or 'response'): rename the column that holds 'output', or add "
                      'it (an alpaca row looks like {"instruction": "...", "input": "", '
                      '"output": "..."})']
    assert len(out.splitlines()) < 10
    assert "5,000 rows read, 0 accepted, 5,000 rejected; 1 error(s)" in out


def test_errors_of_every_row_are_capped_per_code_with_the_total(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("instruction,output\n" + "".join(f"question {i},\n" for i in range(5000)))
    assert cli(["data", "check", str(path), "--model", "none"]) == 1
    out = capsys.readouterr().out
    assert out.count("[empty_content]") == 21
    assert "error: ... and 4,980 more [empty_content] (--all or --json lists them)" in out
    assert "5,000 rejected; 5,001 error(s)" in out  # and too_few_rows
    assert cli(["data", "check", str(path), "--model", "none", "--all"]) == 1
    assert capsys.readouterr().out.count("[empty_content]") == 5000


def test_a_text_and_label_table_checks_as_classification_naming_unused_columns(tmp_path, capsys):
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\tidx\n" + "".join(f"review {i} of a {'fine' if i % 2 else 'dull'}"
                                                  f" film\t{i % 2}\t{i}\n" for i in range(12)))
    assert cli(["data", "check", str(path), "--model", "none"]) == 0  # a warning: still exit 0
    out = capsys.readouterr().out
    assert (f"warning: {path}:0 -: [unused_columns] column 'idx' is not used by the "
            "classification format (kept as metadata for slices)") in out
    assert out.count("[unused_columns]") == 1  # once for the file, not per row
    assert (f"{path}: ok: classification, 12 rows read, 12 accepted, 0 rejected; 0 error(s), "
            "1 warning(s)") in out
    assert cli(["data", "check", str(path), "--model", "none", "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert (f"warning: {path}:0 -: [unused_columns] columns 'label', 'idx' are not used by the "
            "text format (kept as metadata for slices; classification would use 'label': set "
            "format: classification)") in out
    assert f"{path}: ok: text, 12 rows read" in out
    assert cli(["data", "check", str(path), "--model", "none", "--json"]) == 0
    (file,) = json.loads(capsys.readouterr().out)["files"]
    assert file["format"] == "classification" and file["counts"] == {"unused_columns": 1}
    assert [(f["line"], f["code"], f["severity"]) for f in file["findings"]] == [
        (0, "unused_columns", "warning")]
