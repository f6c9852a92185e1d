"""The quickstart recipe end to end on a tiny model (the real run is `make quickstart`)."""

import json
import shlex
from pathlib import Path

from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.recipes.quickstart import format_table, next_steps, run_quickstart


def test_quickstart_writes_data_run_and_results(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run goes to ./runs, the default runs folder
    results = run_quickstart(Path("qs"), model=str(tiny_model_dir),
                             settings={"n_train": 36, "n_test": 24, "epochs": 1, "batch_size": 6,
                                       "max_new_tokens": 4})
    qs = tmp_path / "qs"
    for f in ("data/train.jsonl", "data/valid.jsonl", "data/test.jsonl", "quickstart.yaml", "results.json"):
        assert (qs / f).is_file(), f
    assert json.loads((qs / "results.json").read_text()) == results
    assert results["held_out_rows"] == 24
    for side in ("base", "fine_tuned"):
        assert 0.0 <= results[side]["accuracy"] <= 1.0
    name = Path(results["run"]).name
    assert Path(results["run"]) == tmp_path / "runs" / name and not (qs / "runs").exists()
    run = json.loads((tmp_path / "runs" / name / "summary.json").read_text())
    assert run["steps"] == 6 and run["train_rows"] == 36
    # the recipe returns the results; the CLI prints the table and the next steps
    out = format_table(results) + "\n" + next_steps(Path(results["run"]), qs / "data" / "test.jsonl")
    assert "base" in out and "fine-tuned (LoRA)" in out and "gain:" in out
    # every printed next step runs as printed, from the folder the quickstart ran in
    steps = [shlex.split(line) for line in out.split("next steps")[1].splitlines()[1:] if line.strip()]
    assert [s[:2] for s in steps] == [["tunelab", "runs"], ["tunelab", "generate"], ["tunelab", "eval"],
                                      ["tunelab", "export"]]
    for argv in steps:
        assert main([*argv[1:], *(["--no-progress"] if argv[1] == "eval" else [])]) == 0, argv
        if argv[1] == "runs":
            assert name in capsys.readouterr().out
    assert (tmp_path / f"{name}-merged" / "model.safetensors").is_file()
    # held-out tickets never appear in training
    train = {json.loads(x)["messages"][1]["content"] for x in (qs / "data/train.jsonl").read_text().splitlines()}
    test = {json.loads(x)["messages"][1]["content"] for x in (qs / "data/test.jsonl").read_text().splitlines()}
    assert not train & test


def test_quickstart_cli_reports_a_missing_model(tmp_path, capsys):
    assert main(["quickstart", "--workdir", str(tmp_path), "--model", "no-such-model", "--no-progress"]) == exits.MODEL
    assert "no-such-model" in capsys.readouterr().err
