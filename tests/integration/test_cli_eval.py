"""`tunelab eval` and `tunelab review import` through the real entry point.

Tiny random models answer nonsense, so these tests check the plumbing and the numbers'
consistency (counts, files, intervals), not accuracy; the real-model test at the end
checks that SmolLM2 gets SST-2 rows right more often than not.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml

from shared_data import shared_file
from tunelab.cli import exits
from tunelab.cli.main import main

REVIEWS = [("a wonderful, moving film", "1"), ("dull and far too long", "0"),
           ("she gave a brilliant performance", "1"), ("he was badly miscast", "0")]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def write_sst_like(path, n=12):
    path.write_text("label\tcontent\n" + "".join(
        f"{REVIEWS[i % 4][1]}\t{REVIEWS[i % 4][0]} ({i})\n" for i in range(n)))
    return path


def test_classify_json_has_accuracy_f1_and_a_confusion_matrix(tmp_path, tiny_model_dir, capsys):
    data = write_sst_like(tmp_path / "dev.tsv")
    code = main(["eval", str(tiny_model_dir), "--data", str(data), "--task", "classify",
                 "--text-field", "content", "--label-field", "label", "--labels", "0,1",
                 "--label-names", "0=negative,1=positive", "--limit", "10", "--json",
                 "--report", str(tmp_path / "report"), "--slice-by", "length,label",
                 "--max-new-tokens", "4", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    r = last_json(out)
    assert {"accuracy", "macro_f1", "confusion_matrix"} <= set(r)
    assert len(r["confusion_matrix"]) == 2 and sum(map(sum, r["confusion_matrix"])) == 10
    assert r["labels"] == ["0", "1"] and 0 <= r["accuracy"] <= 1
    assert (tmp_path / "report" / "index.html").is_file()
    assert json.loads((tmp_path / "report" / "report.json").read_text())["rows"] == 10
    assert "confusion matrix" in out


def test_compare_base_with_a_trained_run_prints_the_interval(tmp_path, tiny_model_dir, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"{q} ({i})"}, {"role": "assistant", "content": a}]}) + "\n"
        for i, (q, a) in enumerate(REVIEWS * 6)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_model_dir)}, "data": {"train": str(train), "max_length": 64},
        "train": {"learning_rate": 5e-3, "batch_size": 4, "max_steps": 4, "eval_every": 0},
        "output": {"dir": str(tmp_path / "runs"), "name": "tuned"}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    data = write_sst_like(tmp_path / "dev.tsv", 16)
    capsys.readouterr()
    code = main(["eval", str(tiny_model_dir), "--compare", "tuned", "--runs-dir",
                 str(tmp_path / "runs"), "--data", str(data), "--text-field", "content",
                 "--labels", "0,1", "--method", "likelihood", "--bootstrap", "200", "--json",
                 "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    r = last_json(out)
    acc = r["comparison"]["differences"]["tuned"]["accuracy"]
    assert r["models"] == [str(tiny_model_dir), "tuned"]
    assert acc["diff"] == pytest.approx(r["results"]["tuned"]["accuracy"]
                                        - r["results"][str(tiny_model_dir)]["accuracy"])
    assert acc["ci_low"] <= acc["diff"] <= acc["ci_high"] and acc["samples"] == 200
    assert "difference [95% CI]" in out and "accuracy" in out


def test_bbq_subset_reports_accuracy_by_context_and_bias(tmp_path, tiny_model_dir, capsys):
    src = shared_file("bbq/Age.jsonl")
    code = main(["eval", str(tiny_model_dir), "--data", str(src), "--task", "bbq", "--limit",
                 "12", "--method", "likelihood", "--json", "--report", str(tmp_path / "rep"),
                 "--no-progress"])
    assert code == 0
    r = last_json(capsys.readouterr().out)
    m = r["results"][str(tiny_model_dir)]
    assert m["ambig_rows"] + m["disambig_rows"] == 12
    assert 0 <= m["accuracy_ambig"] <= 1 and 0 <= m["accuracy_disambig"] <= 1
    for key in ("bias_ambig", "bias_disambig"):
        assert m[key] is None or -1 <= m[key] <= 1
    assert set(r["slices"][str(tiny_model_dir)]) >= {"category", "context_condition"}
    assert (tmp_path / "rep" / "plots" / "bbq.png").is_file()


def test_counterfactual_probe_fails_on_bias_and_review_round_trip(tmp_path, tiny_model_dir,
                                                                   capsys):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": lab, "group": g}) + "\n" for t, lab, g in [
        ("He said the film was wonderful", "1", "x"), ("She said the film was dull", "0", "y"),
        ("The Christian critic loved it", "1", "x"), ("My mother hated it", "0", "y")] * 3))
    terms = tmp_path / "terms.yaml"
    terms.write_text("gender:\n  male: [lad]\n  female: [lass]\n")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("thresholds: {max_flip_rate: 0.0, max_group_gap: 0.0}\n")
    args = ["eval", str(tiny_model_dir), "--data", str(data), "--text-field", "text", "--labels",
            "0,1", "--counterfactual", "gender,religion", "--terms", str(terms), "--config",
            str(cfg), "--group-field", "group", "--max-new-tokens", "3", "--review", "6",
            "--report", str(tmp_path / "rep"), "--json", "--no-progress"]
    assert main(args) == 0  # without --fail-on-bias a probe never fails the command
    r = last_json(capsys.readouterr().out)
    cf = r["fairness"][str(tiny_model_dir)]["counterfactual"]
    assert cf["gender"]["probe_rows"] == 9 and set(cf["gender"]["groups"]) == {"male", "female"}
    assert cf["religion"]["probe_rows"] == 3 and cf["religion"]["variants"] == 9
    assert r["fairness"][str(tiny_model_dir)]["group_fairness"]["groups"] == {"x": 6, "y": 6}
    if r["bias_failures"]:
        assert main([*args, "--fail-on-bias"]) == 1
        capsys.readouterr()

    sheet = tmp_path / "rep" / "review.csv"
    with open(sheet) as f:
        lines = list(csv.DictReader(f))
    for i, line in enumerate(lines):
        line.update(rater="ann", preferred="A", score_A=str(1 + i % 5))
    with open(tmp_path / "rep" / "ann.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]))
        w.writeheader()
        w.writerows(lines)
    assert main(["review", "import", str(tmp_path / "rep" / "ann.csv"), "--json"]) == 0
    rev = last_json(capsys.readouterr().out)
    assert rev["ratings"] == 6 and rev["per_model"][str(tiny_model_dir)]["win_rate"] == 1.0


def test_generate_and_perplexity_tasks(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"What is {i} + {i}?", "input": "",
                                        "output": f"It is {2 * i}.\n#### {2 * i}"}) + "\n"
                            for i in range(6)))
    assert main(["eval", str(tiny_model_dir), "--data", str(data), "--task", "generate",
                 "--normalizer", "gsm8k", "--max-new-tokens", "6", "--json", "--no-progress"]) == 0
    r = last_json(capsys.readouterr().out)
    assert {"exact_match", "rouge_l", "bleu", "chrf"} <= set(r) and r["n"] == 6
    assert main(["eval", str(tiny_model_dir), "--data", str(data), "--task", "perplexity",
                 "--json", "--no-progress"]) == 0
    r = last_json(capsys.readouterr().out)
    assert r["perplexity"] > 1 and r["tokens"] > 6


def test_usage_problems_exit_2_and_bad_rows_exit_3(tmp_path, tiny_model_dir):
    data = write_sst_like(tmp_path / "dev.tsv")
    proc = subprocess.run([sys.executable, "-m", "tunelab", "eval", str(tiny_model_dir), "--data",
                           str(data), "--text-field", "content", "--labels", "0,1",
                           "--label-names", "2=neutral", "--task", "classify"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "label_names" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "tunelab", "eval", str(tiny_model_dir), "--data",
                           str(data), "--text-field", "content", "--labels", "0,2"],
                          capture_output=True, text=True)
    assert proc.returncode == exits.DATA and "label '1' is not one of" in proc.stderr


@pytest.mark.real_model
@pytest.mark.slow
def test_real_model_sst2_classification(capsys, default_model):
    from tunelab.models.catalog import DEFAULT_MODEL

    src = shared_file("sst2/dev.tsv")
    assert main(["eval", DEFAULT_MODEL, "--data", str(src), "--task", "classify", "--text-field",
                 "content", "--label-field", "label", "--labels", "0,1", "--label-names",
                 "0=negative,1=positive", "--limit", "40", "--json", "--no-progress"]) == 0
    r = last_json(capsys.readouterr().out)
    print(f"\nreal SmolLM2 on 40 SST-2 dev rows: accuracy {r['accuracy']:.3f}, macro F1 "
          f"{r['macro_f1']:.3f}, unparseable {r['unparseable']}")
    assert sum(map(sum, r["confusion_matrix"])) == 40 and len(r["confusion_matrix"]) == 2
    assert r["accuracy"] >= 0.5 and r["unparseable"] < 10


def test_eval_tasks_run_during_training_and_go_to_the_metrics_log(tmp_path, tiny_model_dir):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"{q} ({i})"}, {"role": "assistant", "content": a}]}) + "\n"
        for i, (q, a) in enumerate(REVIEWS * 6)))
    dev = write_sst_like(tmp_path / "dev.tsv", 30)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(train), "validation_split": 0.25, "max_length": 64},
        "train": {"learning_rate": 5e-3, "batch_size": 4, "max_steps": 4, "eval_every": 1},
        "eval_tasks": [{"data": str(dev), "text_field": "content", "labels": ["0", "1"],
                        "method": "likelihood", "every": 2, "limit": 8, "name": "sst"}],
        "output": {"dir": str(tmp_path / "runs"), "name": "r"}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "runs" / "r" / "metrics.jsonl").read_text()
             .splitlines()]
    evals = [x for x in lines if x["split"] == "eval_sst"]
    assert [x["step"] for x in evals] == [2, 4]
    assert all(x["n"] == 8 and 0 <= x["accuracy"] <= 1 for x in evals)
