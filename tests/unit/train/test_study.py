"""The shared study: exact trial totals under a file lock, dead owners failed and retried."""

import multiprocessing
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from tunelab.train.study import (
    OWNER,
    RETRY_OF,
    ask_next,
    fail_dead_trials,
    open_storage,
    owner_tag,
    taken,
)


def make_study(folder):
    storage = open_storage(f"sqlite:///{folder / 'study.db'}", heartbeat_seconds=0)
    return optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                               sampler=optuna.samplers.RandomSampler(seed=0))


def test_a_dead_owners_trial_is_failed_and_its_parameters_retried(tmp_path):
    study = make_study(tmp_path)
    trial, before = ask_next(study, tmp_path, total=3)
    assert before == 0 and trial.user_attrs[OWNER] == owner_tag()
    x = trial.suggest_float("x", 0, 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = owner_tag().rsplit(":", 2)[0]
    trial.set_user_attr(OWNER, f"{host}:{dead}:0")  # as if a killed process had run it
    assert fail_dead_trials(study) == [trial.number]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[1].state == TrialState.WAITING
    assert trials[1].user_attrs[RETRY_OF] == 0 and taken(trials) == 0
    again, _ = ask_next(study, tmp_path, total=3)
    assert again.number == 1 and again.suggest_float("x", 0, 1) == x  # same parameters


def test_a_live_trial_is_left_alone_and_counted(tmp_path):
    study = make_study(tmp_path)
    ask_next(study, tmp_path, total=2)
    assert fail_dead_trials(study) == []
    assert taken(study.get_trials()) == 1


def _worker(folder, total, out):
    from pathlib import Path

    study = make_study(Path(folder))
    ran = 0
    while True:
        trial, _ = ask_next(study, Path(folder), total)
        if trial is None:
            break
        time.sleep(0.05)  # a trial takes a while: the other worker asks meanwhile
        study.tell(trial, trial.suggest_float("x", 0, 1))
        ran += 1
    out.put(ran)


def test_two_processes_take_exactly_the_total(tmp_path):
    make_study(tmp_path)  # create the tables once, as run_tune does under the lock
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), 7, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sum(out.get() for _ in procs) == 7
    trials = make_study(tmp_path).get_trials()
    assert len(trials) == 7 and all(t.state == TrialState.COMPLETE for t in trials)
