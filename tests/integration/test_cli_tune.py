"""`tunelab tune` on a tiny model: exact trial totals, pruning, resume after SIGKILL, workers."""

import csv
import itertools
import signal
import subprocess
import sys
import time

from optuna.trial import TrialState
from rundata import child_env, config, study_trials, summary, tunelab, write_yaml

from tunelab.cli.main import main
from tunelab.config import load_config

GRID = {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 5e-2, "log": True,
                                "values": [1e-3, 2e-2]},
        "lora.r": {"type": "categorical", "choices": [2, 4]}}


def point(t):
    return t.params["train.learning_rate"], t.params["lora.r"]


def by_state(trials, state):
    return [t for t in trials if t.state == state]


def test_grid_runs_exactly_its_points_and_writes_the_best_config(tmp_path, tiny_model_dir, capsys):
    cfg = write_yaml(tmp_path / "grid.yaml", config(tmp_path, tiny_model_dir, search={"params": GRID}))
    assert main(["tune", str(cfg), "--sampler", "grid", "--pruner", "none", "--trials", "10"]) == 0
    out = capsys.readouterr().out
    study = tmp_path / "runs" / "grid"
    trials = study_trials(study, "grid")
    assert len(trials) == 4 and len(by_state(trials, TrialState.COMPLETE)) == 4
    assert {point(t) for t in trials} == set(itertools.product([1e-3, 2e-2], [2, 4]))
    assert sorted(p.name for p in (study / "trials").iterdir()) == [f"trial-000{i}" for i in range(4)]
    with open(study / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    for png in ("optimization_history.png", "param_importances.png"):
        assert (study / png).stat().st_size > 1000
    best = min(trials, key=lambda t: t.value)
    assert f"best: trial {best.number}" in out and "trial  state" in out
    best_cfg = load_config(study / "best.yaml")
    assert best_cfg.search is None and best_cfg.output.name is None
    assert best_cfg.train.learning_rate == best.params["train.learning_rate"]
    assert best_cfg.lora.r == best.params["lora.r"]
    # ready for `tunelab train`
    assert main(["train", str(study / "best.yaml"), "--no-progress", "train.max_steps=1",
                 f"output.dir={tmp_path / 'again'}", "output.name=best"]) == 0
    assert summary(tmp_path / "again" / "best")["steps"] == 1


def test_tpe_with_median_pruner_prunes_a_clearly_bad_trial(tmp_path, tiny_model_dir):
    search = {"sampler": "tpe", "pruner": "median", "startup_trials": 2, "trials": 4,
              "params": {"train.learning_rate": {"type": "float", "low": 1e-7, "high": 5e-2, "log": True}},
              # two good trials first, then one that cannot learn: it must not run to the end
              "enqueue": [{"train.learning_rate": 3e-2}, {"train.learning_rate": 2e-2},
                          {"train.learning_rate": 1e-7}]}
    cfg = write_yaml(tmp_path / "tpe.yaml", config(tmp_path, tiny_model_dir, {"max_steps": 8},
                                                   search=search))
    assert main(["tune", str(cfg)]) == 0
    trials = study_trials(tmp_path / "runs" / "tpe", "tpe")
    assert len(trials) == 4
    bad = trials[2]
    assert bad.params["train.learning_rate"] == 1e-7 and bad.state == TrialState.PRUNED
    run = summary(tmp_path / "runs" / "tpe" / "trials" / "trial-0002")
    assert run["stopped_by_hook"] and run["steps"] < 8  # stopped early, not judged at the end
    assert all(t.state == TrialState.COMPLETE for t in trials[:2])


def test_killed_search_resumes_with_the_remaining_trials(tmp_path, tiny_model_dir):
    cfg = write_yaml(tmp_path / "kill.yaml", config(
        tmp_path, tiny_model_dir, {"max_steps": 24, "eval_every": 0, "batch_size": 2},
        search={"params": GRID, "sampler": "grid", "pruner": "none"}))
    study = tmp_path / "runs" / "kill"
    proc = subprocess.Popen([sys.executable, "-m", "tunelab", "tune", str(cfg)], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    third = study / "trials" / "trial-0002" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (third.is_file() and '"train"' in third.read_text()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-way through the third trial
    assert proc.wait() == -signal.SIGKILL
    done_before = {n: (study / "trials" / f"trial-000{n}" / "summary.json").stat().st_mtime_ns
                   for n in (0, 1)}
    again = tunelab("tune", str(cfg))
    assert again.returncode == 0, again.stderr
    assert "trial(s) 2 of a stopped search: failed" in again.stderr
    trials = study_trials(study, "kill")
    complete = by_state(trials, TrialState.COMPLETE)
    assert len(complete) == 4 and [t.number for t in by_state(trials, TrialState.FAIL)] == [2]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 2)
    assert retry.params == trials[2].params and retry.state == TrialState.COMPLETE
    assert {point(t) for t in complete} == set(itertools.product([1e-3, 2e-2], [2, 4]))
    for n, mtime in done_before.items():  # finished trials were not run again
        assert (study / "trials" / f"trial-000{n}" / "summary.json").stat().st_mtime_ns == mtime


def test_two_workers_share_one_study_exactly(tmp_path, tiny_model_dir):
    grid = {**GRID, "lora.r": {"type": "categorical", "choices": [2, 4, 8]}}  # 6 points
    cfg = write_yaml(tmp_path / "two.yaml", config(
        tmp_path, tiny_model_dir, search={"params": grid, "sampler": "grid", "pruner": "none"}))
    proc = tunelab("tune", str(cfg), "--trials", "5", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    trials = study_trials(tmp_path / "runs" / "two", "two")
    assert len(trials) == 5 and len(by_state(trials, TrialState.COMPLETE)) == 5
    params = [point(t) for t in trials]
    assert len(set(params)) == 5  # no grid point twice
    runs = sorted(p.name for p in (tmp_path / "runs" / "two" / "trials").iterdir())
    assert runs == [f"trial-000{i}" for i in range(5)]
    assert "5 complete; total 5" in proc.stdout


def test_tune_without_a_search_block_or_validation_is_a_usage_error(tmp_path, tiny_model_dir, capsys):
    plain = write_yaml(tmp_path / "plain.yaml", config(tmp_path, tiny_model_dir))
    assert main(["tune", str(plain)]) == 2
    assert "search: required by `tunelab tune`" in capsys.readouterr().err
    cfg = config(tmp_path, tiny_model_dir, search={"params": GRID})
    cfg["data"]["validation_split"] = 0.0
    assert main(["tune", str(write_yaml(tmp_path / "noval.yaml", cfg)), "--sampler", "grid"]) == 2
    assert "needs validation data" in capsys.readouterr().err
    assert main(["tune", str(plain), "--sampler", "sideways", "--trials", "0"]) == 2
    err = capsys.readouterr().err
    assert "search.sampler" in err and "search.trials" in err  # every problem at once
