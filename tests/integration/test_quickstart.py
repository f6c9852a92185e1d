"""The quickstart recipe end to end on a tiny model (the real run is `make quickstart`)."""

import json

from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.recipes.quickstart import run_quickstart


def test_quickstart_writes_data_run_and_results(tmp_path, tiny_model_dir, capsys):
    results = run_quickstart(tmp_path / "qs", model=str(tiny_model_dir), progress=False,
                             settings={"n_train": 36, "n_test": 24, "epochs": 1, "batch_size": 6,
                                       "max_new_tokens": 4})
    qs = tmp_path / "qs"
    for f in ("data/train.jsonl", "data/valid.jsonl", "data/test.jsonl", "quickstart.yaml", "results.json"):
        assert (qs / f).is_file(), f
    assert json.loads((qs / "results.json").read_text()) == results
    assert results["held_out_rows"] == 24
    for side in ("base", "fine_tuned"):
        assert 0.0 <= results[side]["accuracy"] <= 1.0
    run = json.loads((qs / "runs" / results["run"].split("/")[-1] / "summary.json").read_text())
    assert run["steps"] == 6 and run["train_rows"] == 36
    out = capsys.readouterr().out
    assert "base" in out and "fine-tuned (LoRA)" in out and "gain:" in out
    # held-out tickets never appear in training
    train = {json.loads(x)["messages"][1]["content"] for x in (qs / "data/train.jsonl").read_text().splitlines()}
    test = {json.loads(x)["messages"][1]["content"] for x in (qs / "data/test.jsonl").read_text().splitlines()}
    assert not train & test


def test_quickstart_cli_reports_a_missing_model(tmp_path, capsys):
    assert main(["quickstart", "--workdir", str(tmp_path), "--model", "no-such-model", "--no-progress"]) == exits.MODEL
    assert "no-such-model" in capsys.readouterr().err
