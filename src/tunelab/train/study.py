"""The shared study of a hyperparameter search: storage, lock, exact trial count, retries.

A study lives in an RDB storage (SQLite in the study folder by default; any SQLAlchemy
URL, e.g. PostgreSQL, for several machines), so a killed search resumes and several
workers share it. Handing out a trial is one critical section under a cross-process
file lock (fcntl): fail the trials of dead processes (their parameters are queued
again), count the trials taken, and ``ask()`` only while fewer than the total are
taken. So the total is exact however many workers run. A trial records its owner
(host, pid, process start time); a RUNNING trial whose owner is gone on this host is
failed at once, one from another host when its heartbeat stops.

This module knows nothing of configs or training.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

OWNER = "owner"  # user attr: host:pid:start-time of the process running the trial
RETRY_OF = "retry_of"  # user attr of a re-queued trial: the number of the failed one


@contextmanager
def study_lock(folder: Path) -> Iterator[None]:
    """Hold the study folder's exclusive lock (blocks until it is free)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".study.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is absent):
    with the pid, it tells a live owner from a new process that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def owner_tag() -> str:
    """This process, as a trial's owner."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _owner_gone(tag: str | None, age_seconds: float) -> bool:
    """True when the owner ran on this host and is no longer running. A trial without
    an owner died between ask() and setting it (both under the lock); one from another
    machine may be in that moment, so it gets a minute."""
    if not tag:
        return age_seconds > 60
    host, pid, started = tag.rsplit(":", 2)
    if host != socket.gethostname():
        return False  # another machine's: its heartbeat tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return _start_time(int(pid)) != started


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue the failed ``trial``'s parameters again (as a WAITING trial)."""
    system = {k: v for k, v in trial.system_attrs.items() if k != "fixed_params"}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={RETRY_OF: trial.number}, system_attrs=system))


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose process is gone and queue their parameters again.

    Call under ``study_lock``. Returns the numbers of the trials failed.
    """
    failed = []
    storage = study._storage  # optuna has no public call to fail a trial by id
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        age = (now - t.datetime_start).total_seconds() if t.datetime_start else 0.0
        if _owner_gone(t.user_attrs.get(OWNER), age):
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            retry_trial(study, t)
            failed.append(t.number)
    with warnings.catch_warnings():  # experimental in optuna, stable in use since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # other hosts: stopped heartbeats (callback retries)
    return failed


def taken(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trials that count towards the total: finished or running, not a failure re-queued."""
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(1 for t in trials if t.state in counted
               or (t.state == TrialState.FAIL and t.number not in retried))


def open_storage(url: str, heartbeat_seconds: int) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url``; SQLite waits for its lock instead of failing at once."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    if heartbeat_seconds:
        kwargs.update(heartbeat_interval=heartbeat_seconds, grace_period=4 * heartbeat_seconds,
                      heartbeat_stale_trial_callback=retry_trial)
    with warnings.catch_warnings():  # heartbeats are experimental in optuna, stable since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, **kwargs)


class Heartbeat:
    """Record a trial's heartbeat every few seconds in a thread, while it runs."""

    def __init__(self, storage: Any, trial_id: int, seconds: int) -> None:
        self._stop = threading.Event()
        self._thread = None
        if seconds and hasattr(storage, "record_heartbeat"):
            storage.record_heartbeat(trial_id)

            def beat() -> None:
                while not self._stop.wait(seconds):
                    storage.record_heartbeat(trial_id)

            self._thread = threading.Thread(target=beat, daemon=True, name="trial-heartbeat")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def ask_next(study: optuna.Study, folder: Path, total: int) -> tuple[optuna.Trial | None, int]:
    """The next trial for this worker, or None when ``total`` trials are taken.

    Returns:
        (the trial or None, how many trials were taken before it).
    """
    with study_lock(folder):
        fail_dead_trials(study)
        n = taken(study.get_trials(deepcopy=False))
        if n >= total:
            return None, n
        with warnings.catch_warnings():  # ask-and-tell keeps its own heartbeat (Heartbeat)
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        trial.set_user_attr(OWNER, owner_tag())
        return trial, n
