"""The `tunelab tune` recipe: a hyperparameter search whose trials are training runs.

A trial is an ordinary run (or phased run) of the config with the sampled values set at
their dotted paths, in ``<study>/trials/trial-<n>/``. It reports each validation to the
pruner (``on_validation``) and is stopped early when the pruner says so; its value is
the validation metric of the weights it kept. The study folder ``<output.dir>/<study>/``
holds the storage (``study.db`` unless ``search.storage`` names another), the trials,
and at the end ``results.csv``, the plots and ``best.yaml``, ready for `tunelab train`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.compose import apply_values, phase_config
from tunelab.config.loader import dump_config
from tunelab.config.schema import RunConfig, SearchSettings
from tunelab.errors import ConfigError, TrainingError, TunelabError
from tunelab.eval.during_training import eval_hook
from tunelab.files import write_json_atomic, write_text_atomic
from tunelab.tracking.loggers import read_metrics
from tunelab.tracking.reporter import SILENT, Reporter, WithoutBars
from tunelab.tracking.run_dir import SUMMARY
from tunelab.train.phased import run_training

TRIALS = "trials"


@dataclass
class TuneResult:
    """What a search leaves: its folder, trial counts by state, the best trial, the table."""

    folder: Path
    total: int
    counts: dict[str, int]
    table: str
    best: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _search(cfg: RunConfig) -> SearchSettings:
    """``cfg.search``, which every step of a search reads.

    Raises:
        ConfigError: the config has no search block.
    """
    if cfg.search is None:
        raise ConfigError(["search: required by `tunelab tune`: a search: block with params "
                           "(e.g. train.learning_rate: {type: float, low: 1e-5, high: 1e-3, log: true})"])
    return cfg.search


def _check(cfg: RunConfig, reporter: Reporter) -> None:
    """Refuse a search that cannot produce a value; warn when pruning cannot act."""
    s = _search(cfg)
    last = phase_config(cfg, len(cfg.phases) - 1) if cfg.phases else cfg
    if not last.data.validation and last.data.validation_split == 0:
        raise ConfigError(["data: a search needs validation data to judge trials "
                           "(data.validation files, or data.validation_split > 0)"])
    if s.pruner != "none" and last.train.eval_every == 0 \
            and "train.eval_every" not in s.params:
        reporter.warning(f"search.pruner is {s.pruner} but train.eval_every is 0: "
                         "trials validate only at the end, so none is stopped early")


def study_folder(cfg: RunConfig, default_name: str) -> tuple[Path, str, str]:
    """(the study folder, the study name, the storage URL)."""
    name = _search(cfg).study or default_name
    folder = Path(cfg.output.dir) / name
    return folder, name, _search(cfg).storage or f"sqlite:///{folder.resolve() / 'study.db'}"


def _space_record(cfg: RunConfig) -> dict:
    s = _search(cfg)
    return {"params": {k: v.model_dump(mode="json") for k, v in s.params.items()},
            "metric": s.metric, "direction": s.direction}


def _open_study(cfg: RunConfig, folder: Path, name: str, url: str, create: bool) -> Any:
    import optuna

    from tunelab.train.search import build_pruner, build_sampler
    from tunelab.train.study import open_storage, study_lock

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tunelab prints its own lines
    s = _search(cfg)
    with study_lock(folder):  # table creation and enqueueing race between processes
        storage = open_storage(url, s.heartbeat_seconds)
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                    direction=s.direction, sampler=build_sampler(s),
                                    pruner=build_pruner(s))
        if create:
            record, now = folder / "search.json", _space_record(cfg)
            if record.is_file() and json.loads(record.read_text(encoding="utf-8")) != now:
                raise ConfigError([f"search: study {name!r} in {folder} was started with another "
                                   "search space, metric or direction; set search.study to a new name"])
            write_json_atomic(record, now)
            write_text_atomic(folder / "config.yaml", dump_config(cfg))
            if not study.trials:
                for fixed in s.enqueue:
                    study.enqueue_trial(fixed)
    return study


def trial_value(run_dir: Path, metric: str) -> float:
    """The validation ``metric`` of the weights a finished run kept (its last phase's).

    Raises:
        TrainingError: the run logged no validation.
    """
    summary = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    if summary.get("phases"):
        run_dir = run_dir / summary["phases"][-1]["folder"]
        summary = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    vals = [r for r in read_metrics(run_dir) if r["split"] == "validation"]
    kept = [r for r in vals if r["step"] == summary["weights_from_step"]] or vals
    if not kept:
        raise TrainingError(f"trial {run_dir.name} logged no validation", hint="add validation data")
    return float(kept[-1][metric])


def _run_trial(cfg: RunConfig, study: Any, trial: Any, folder: Path, taken_before: int,
               total: int, reporter: Reporter) -> str:
    """Train one trial and tell the study; returns its state (or ``stopped`` by a signal)."""
    from optuna.trial import TrialState

    from tunelab.train.search import suggest
    from tunelab.train.study import Heartbeat, retry_trial

    s = _search(cfg)
    values = suggest(trial, s.params)
    tcfg = apply_values(cfg, values)
    tcfg.output.dir, tcfg.output.name = str(folder / TRIALS), f"trial-{trial.number:04d}"
    trial.set_user_attr("run", str(Path(tcfg.output.dir) / tcfg.output.name))
    reporter.info(f"trial {trial.number} ({taken_before + 1} of {total}): "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()))

    def report(step: int, metrics: dict[str, float]) -> bool:
        trial.report(float(metrics[s.metric]), step)
        return trial.should_prune()

    beat = Heartbeat(study._storage, trial._trial_id, s.heartbeat_seconds)
    try:
        # Trials report per trial, not per step: no bars, but every line and warning (a
        # dropped row, Ctrl-C's "finishing this step") and the same eval tasks.
        run_dir = run_training(tcfg, WithoutBars(reporter), on_validation=report,
                               task_hook=eval_hook)
    except TunelabError as e:
        study.tell(trial, state=TrialState.FAIL)
        reporter.info(f"trial {trial.number} failed: {e}")
        return "fail"
    finally:
        beat.stop()
    if not (run_dir / SUMMARY).is_file():  # a signal stopped it: its parameters run again later
        study.tell(trial, state=TrialState.FAIL)
        retry_trial(study, next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))
        return "stopped"
    if json.loads((run_dir / SUMMARY).read_text(encoding="utf-8")).get("stopped_by_hook"):
        study.tell(trial, state=TrialState.PRUNED)
        reporter.info(f"trial {trial.number} pruned")
        return "pruned"
    value = trial_value(run_dir, s.metric)
    study.tell(trial, value)
    reporter.info(f"trial {trial.number} done: validation {s.metric} {value:.4f}")
    return "complete"


def total_trials(cfg: RunConfig) -> int:
    """``search.trials``, capped at the grid's size for a grid search."""
    from tunelab.train.search import grid_size

    s = _search(cfg)
    return min(s.trials, grid_size(s)) if s.sampler == "grid" else s.trials


def work(cfg: RunConfig, folder: Path, name: str, url: str, threads: int | None = None,
         reporter: Reporter = SILENT) -> int:
    """One worker: take trials from the shared study until the total is taken.

    Returns:
        The number of trials this worker ran.
    """
    from tunelab.train.study import ask_next

    if threads:
        import torch

        torch.set_num_threads(threads)
    study = _open_study(cfg, folder, name, url, create=False)
    parent, ran, total = os.getppid(), 0, total_trials(cfg)
    while os.getppid() == parent:  # an orphaned worker stops (its search was killed)
        trial, before = ask_next(study, folder, total)
        if trial is None:
            break
        ran += 1
        if _run_trial(cfg, study, trial, folder, before, total, reporter) == "stopped":
            break
    return ran


def _worker_main(cfg_data: dict, folder: str, name: str, url: str, threads: int | None,
                 reporter: Reporter) -> None:
    """Entry point of a spawned worker process (arguments must pickle)."""
    work(RunConfig.model_validate(cfg_data), Path(folder), name, url, threads, reporter)


def _run_workers(cfg: RunConfig, folder: Path, name: str, url: str, workers: int,
                 reporter: Reporter) -> None:
    threads = cfg.train.num_threads or max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    procs = [ctx.Process(target=_worker_main, name=f"tune-worker-{i}",
                         args=(cfg.model_dump(mode="json"), str(folder), name, url, threads,
                               reporter))
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # they got the signal too: each finishes its step and stops
            p.join()
        raise
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        reporter.warning(f"{', '.join(failed)} ended with an error; run `tunelab tune` again to finish")


def _finish(cfg: RunConfig, study: Any, folder: Path, name: str, total: int) -> TuneResult:
    from optuna.trial import TrialState

    from tunelab.train.search import format_table, results_rows, write_csv, write_plots
    from tunelab.train.study import fail_dead_trials, study_lock

    s = _search(cfg)
    with study_lock(folder):
        fail_dead_trials(study)
    params = list(s.params)
    rows = results_rows(study, params)
    write_csv(rows, folder / "results.csv")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    result = TuneResult(folder, total, counts, format_table(rows, params, s.direction == "maximize"))
    result.notes = write_plots(study, folder)
    if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        best = study.best_trial
        best_cfg = apply_values(cfg, best.params)
        best_cfg.output.name = None  # `tunelab train best.yaml` names a new run
        header = (f"# The best trial of study {name!r}: trial {best.number}, validation "
                  f"{s.metric} {best.value:.6g}.\n# Train it: tunelab train {folder / 'best.yaml'}\n")
        write_text_atomic(folder / "best.yaml", header + dump_config(best_cfg))
        result.best = {"trial": best.number, "value": best.value, "params": best.params,
                       "run": best.user_attrs.get("run"), "config": str(folder / "best.yaml")}
    write_json_atomic(folder / "study.json", {"study": name, "metric": s.metric,
                                              "direction": s.direction, "total": total,
                                              "counts": counts, "best": result.best})
    return result


def run_tune(cfg: RunConfig, default_name: str, workers: int = 1,
             reporter: Reporter = SILENT) -> TuneResult:
    """Run (or continue) the search of ``cfg.search`` until its trial total is taken.

    Args:
        cfg: a validated config with a ``search`` block.
        default_name: the study name when ``search.study`` is not set (the config's stem).
        workers: processes sharing the study on this machine.
        reporter: one line per trial, and warnings (it must pickle for workers > 1).

    Raises:
        ConfigError: no search block, no validation data, or a changed search space.
    """
    from tunelab.train.study import fail_dead_trials, study_lock, taken

    _check(cfg, reporter)
    folder, name, url = study_folder(cfg, default_name)
    study = _open_study(cfg, folder, name, url, create=True)
    with study_lock(folder):
        dead = fail_dead_trials(study)
    if dead:
        reporter.info(f"trial(s) {', '.join(map(str, dead))} of a stopped search: failed; their parameters run again")
    total = total_trials(cfg)
    if total < _search(cfg).trials:
        reporter.info(f"the grid has {total} points: running {total} trials, not {_search(cfg).trials}")
    done = taken(study.get_trials(deepcopy=False))
    reporter.info(f"study {name} ({folder}): {done} of {total} trials taken"
        + ("; continuing" if done else "") + f"; {workers} worker(s)")
    if workers > 1:
        _run_workers(cfg, folder, name, url, workers, reporter)
    else:
        work(cfg, folder, name, url, reporter=reporter)
    return _finish(cfg, study, folder, name, total)
