"""`tunelab data curve`: train on growing slices of the data and see whether more would help.

Each slice is an ordinary run of the config with ``data.train_rows`` set to a fraction of
the training rows the config yields (after the validation split; of ``data.train_rows``
when the config sets it). The slices are nested: ``data.train_rows`` takes the first
rows of one seeded shuffle, so a smaller slice is part of every larger one, and every
slice validates on the same rows. Runs go to ``<out>/runs/rows-<N>/``.

Each finished run is scored: with a task, by the task's primary metric (accuracy,
mae, exact_match) on the evaluation rows, asked the prompt the run was trained on;
without one, by its validation loss. The evaluation rows are ``--eval-data``, else the
config's first validation file, else the rows the validation split held out (written
to ``<out>/heldout.jsonl`` with every column, so they can be evaluated again). The
report (``tunelab.eval.curve``) plots the metric against rows and training minutes and
judges the last step of the curve.
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tunelab.config.evaluation import EvalSettings, eval_settings, with_task
from tunelab.config.schema import DEFAULT_RUNS_DIR, RunConfig
from tunelab.data.example import Example
from tunelab.data.table import read_table
from tunelab.errors import ConfigError, StoreError, UsageError
from tunelab.eval.callables import load_callables
from tunelab.eval.curve import (
    RULES,
    Curve,
    CurvePoint,
    Slice,
    parse_fractions,
    slices,
    verdict,
    write_curve_report,
)
from tunelab.eval.during_training import eval_hook
from tunelab.eval.runner import EvalData, fit_text_field, load_eval_data, task_runner
from tunelab.files import write_text_atomic
from tunelab.tracking.loggers import read_metrics
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.tracking.run_dir import SUMMARY
from tunelab.train.loop import total_steps
from tunelab.train.phased import run_training
from tunelab.train.run import load_run_examples

HELDOUT = "heldout.jsonl"  # the rows the validation split held out, when they are scored
# The primary metric of each task type (``TaskResult.primary``); without a task: "loss".
TASK_METRIC = {"classify": "accuracy", "regress": "mae", "generate": "exact_match"}


@dataclass
class CurveResult:
    """What a curve leaves: the numbers, the report, and whether a signal cut it short."""

    curve: Curve
    folder: Path
    report: Path

    @property
    def stopped(self) -> bool:
        return self.curve.stopped


@dataclass
class _Scoring:
    """How each finished run is scored: a task on fixed rows, or the validation loss."""

    metric: str
    where: str
    settings: EvalSettings | None = None
    data: EvalData | None = None


def _check(cfg: RunConfig, eval_data: str | None, text_field: str | None, eval_limit: int | None,
           out: Path, reporter: Reporter) -> None:
    """Refuse what cannot give a curve, before any data is read or model loaded."""
    if cfg.phases:
        raise ConfigError(["phases: a learning curve trains one run per slice of data.train; "
                           "remove the phases (or train the curve on one phase's config)"])
    validates = bool(cfg.data.validation) or cfg.data.validation_split > 0
    scoring_options = [name for name, value in (("--eval-data", eval_data),
                                                ("--text-field", text_field),
                                                ("--eval-limit", eval_limit)) if value is not None]
    if cfg.task is None and scoring_options:
        raise UsageError(f"{', '.join(scoring_options)}: only a config with a task section is "
                         "scored on evaluation rows; without one the curve's metric is the "
                         "validation loss",
                         hint=f"add a task section to the config, or leave out "
                              f"{' and '.join(scoring_options)}")
    if cfg.task is None and not validates:
        raise ConfigError(["data: a curve without a task is scored by validation loss, and "
                           "this config has no validation rows; set data.validation_split "
                           "(e.g. data.validation_split=0.1) or data.validation, or add a "
                           "task section and --eval-data FILE"])
    if cfg.task is not None and eval_data is None and not validates:
        raise ConfigError(["data: the curve scores each slice's task on evaluation rows, and "
                           "this config has none; pass --eval-data FILE, or set "
                           "data.validation or data.validation_split (e.g. "
                           "data.validation_split=0.1)"])
    runs = out / DEFAULT_RUNS_DIR
    if runs.is_dir() and any(runs.iterdir()):
        raise StoreError(f"{runs} holds the runs of an earlier curve",
                         hint="choose another --out, or remove that folder")
    if cfg.output.name:  # output.dir is always set (the loader resolves it): not told
        reporter.info(f"output.name {cfg.output.name!r} is not used: each slice's run is "
                      f"{runs}/rows-<N>")


def _heldout_file(val_ex: Sequence[Example], path: Path) -> str:
    """Write the held-out rows, every column as in their table, for the task to read."""
    tables: dict[str, dict[int, dict]] = {}
    seen: set[tuple[str, int]] = set()
    lines = []
    for ex in val_ex:
        if ex.source not in tables:
            table = read_table(ex.source)
            tables[ex.source] = dict(zip(table.lines, table.rows, strict=True))
        if (ex.source, ex.line) in seen:  # a weight above 1 repeats rows
            continue
        seen.add((ex.source, ex.line))
        lines.append(json.dumps(tables[ex.source][ex.line], ensure_ascii=False, default=str))
    write_text_atomic(path, "".join(x + "\n" for x in lines), error=StoreError)
    return str(path)


def _scoring(cfg: RunConfig, val_ex: list[Example], out: Path, eval_data: str | None,
             text_field: str | None, limit: int | None, reporter: Reporter) -> _Scoring:
    """Read and check the evaluation rows once, before the first slice trains."""
    if cfg.task is None:
        return _Scoring("loss", "the validation loss of the weights each run kept")
    if eval_data is not None:
        path = eval_data
    elif cfg.data.validation:
        path = cfg.data.validation[0].path
        if len(cfg.data.validation) > 1:
            reporter.info(f"scoring on the first validation file, {path} (--eval-data to "
                          "choose another)")
    else:
        path = _heldout_file(val_ex, out / HELDOUT)
        reporter.info(f"scoring on the {len(val_ex):,} rows the validation split held out "
                      f"(written to {path})")
    given: dict = {"limit": limit}
    if text_field is not None:
        given["text_field"] = text_field
    settings = with_task(eval_settings({k: v for k, v in given.items() if v is not None}),
                         cfg.task)
    if text_field is None:
        settings = fit_text_field(settings, cfg.task, path, reporter)
    data = load_eval_data(path, settings, reporter)
    return _Scoring(TASK_METRIC[cfg.task.type], f"the task's {TASK_METRIC[cfg.task.type]} "
                    f"on {len(data.rows):,} rows of {path}", settings, data)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:02.0f} min"


def _eta(done: list[tuple[int, float, float]], remaining_steps: list[int]) -> str:
    """The time the slices left will take, from the finished ones.

    ``done`` holds (steps, training seconds, seconds besides training) per finished slice:
    training time grows with the steps, loading and scoring do not.
    """
    if not done:
        return "ETA after the first slice"
    per_step = sum(t for _, t, _ in done) / max(1, sum(s for s, _, _ in done))
    fixed = sum(f for _, _, f in done) / len(done)
    left = sum(fixed + per_step * s for s in remaining_steps)
    return f"ETA for the {len(remaining_steps)} slice(s) left: about {_duration(left)}"


def _kept_validation(run_dir: Path, summary: dict) -> dict:
    """The validation record of the weights the run kept (its last one otherwise)."""
    vals = [r for r in read_metrics(run_dir) if r.get("split") == "validation"]
    kept = [r for r in vals if r["step"] == summary.get("weights_from_step")] or vals
    return kept[-1] if kept else {}


def _score(run_dir: Path, scoring: _Scoring, reporter: Reporter) -> tuple[float | None, dict]:
    """The run's task metric and its scalar metrics (the loss curve: none)."""
    if scoring.settings is None or scoring.data is None:
        return None, {}
    s, data = scoring.settings, scoring.data
    assert s.max_new_tokens is not None  # EvalSettings fills in the task's default
    model = load_callables(str(run_dir), str(run_dir.parent), s.max_new_tokens, s.batch_size,
                           reporter)
    result = task_runner(s, data, model)(data.rows)
    del model
    gc.collect()  # one model in memory at a time
    scalars = {k: v for k, v in result.metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    value = result.metrics.get(result.primary)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, scalars  # e.g. regress with no parsed number: no point on the curve
    return float(value), scalars


def _slice_config(cfg: RunConfig, rows: int, runs: Path) -> RunConfig:
    c = cfg.model_copy(deep=True)
    c.data.train_rows = rows
    c.output.dir, c.output.name = str(runs), f"rows-{rows}"
    return c


def _train_slice(cfg: RunConfig, sl: Slice, runs: Path, scoring: _Scoring,
                 reporter: Reporter) -> CurvePoint | None:
    """Train and score one slice; None when a signal stopped its run."""
    started = time.time()
    run_dir = run_training(_slice_config(cfg, sl.rows, runs), reporter, task_hook=eval_hook)
    if not (run_dir / SUMMARY).is_file():
        return None
    summary = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    kept = _kept_validation(run_dir, summary)
    scored = time.time()
    value, metrics = _score(run_dir, scoring, reporter)
    val_loss = kept.get("loss")
    return CurvePoint(
        fraction=sl.fraction, rows=sl.rows, trained_rows=int(summary["train_rows"]), run=str(run_dir),
        steps=int(summary["steps"]), epochs=float(summary["epochs"]),
        train_tokens=int(summary["train_tokens"]), train_seconds=float(summary["train_seconds"]),
        wall_seconds=float(summary["wall_seconds"]), slice_seconds=round(time.time() - started, 1),
        eval_seconds=round(time.time() - scored, 1),
        val_loss=val_loss, val_token_accuracy=kept.get("token_accuracy"),
        final_val_loss=summary.get("final_val_loss"), best_val_loss=summary.get("best_val_loss"),
        value=val_loss if scoring.metric == "loss" else value, eval_metrics=metrics)


def run_curve(cfg: RunConfig, fractions: str | Sequence[float], out_dir: str | Path,
              eval_data: str | None = None, eval_text_field: str | None = None,
              eval_limit: int | None = None, reporter: Reporter = SILENT) -> CurveResult:
    """Train one run per slice of the training rows, score each, and write the report.

    Args:
        cfg: the validated run config (without phases).
        fractions: shares of the training rows, each in (0, 1], e.g. ``"0.1,0.25,0.5,1"``.
        out_dir: the curve's folder: ``runs/rows-<N>/``, ``index.html``, ``plots/``,
            ``curve.json``.
        eval_data: a table to score the task on (default: the first validation file,
            else the held-out rows); only with a task.
        eval_text_field: its text column (default: the run's, or the file's own).
        eval_limit: score the first N evaluation rows only.
        reporter: progress per slice with an ETA, and the runs' own lines and bars.

    Returns:
        The ``CurveResult``; ``stopped`` when a signal ended a slice early (the report
        then holds the slices that finished).

    Raises:
        UsageError: bad fractions, or evaluation options without a task.
        ConfigError: phases, or no rows to score the slices on.
        StoreError: the folder holds an earlier curve's runs.
        TunelabError: any problem with the data, the model or training.
    """
    out = Path(out_dir)
    _check(cfg, eval_data, eval_text_field, eval_limit, out, reporter)
    wanted = parse_fractions(fractions)
    resolved, train_ex, val_ex = load_run_examples(cfg, reporter)
    plan, notes = slices(wanted, len(train_ex))
    for note in notes:
        reporter.warning(note)
    scoring = _scoring(resolved, val_ex, out, eval_data, eval_text_field, eval_limit, reporter)
    ts = cfg.train
    training = (f"a fixed {ts.max_steps} steps per slice (train.max_steps), so small slices "
                "repeat their rows more often" if ts.max_steps is not None
                else f"{ts.epochs:g} epoch(s) per slice, so steps grow with the rows")
    reporter.info(f"learning curve: {len(plan)} slices of {len(train_ex):,} training rows "
                  f"({', '.join(f'{s.rows:,}' for s in plan)}); {training}; scored by "
                  f"{scoring.where}; runs in {out / DEFAULT_RUNS_DIR}")
    steps = [total_steps(s.rows, ts) for s in plan]
    done: list[tuple[int, float, float]] = []
    points: list[CurvePoint] = []
    stopped = False
    for i, sl in enumerate(plan):
        reporter.info(f"slice {i + 1} of {len(plan)}: {sl.rows:,} rows ({sl.fraction:g} of "
                      f"{len(train_ex):,}); {_eta(done, steps[i:])}")
        point = _train_slice(cfg, sl, out / DEFAULT_RUNS_DIR, scoring, reporter)
        if point is None:
            stopped = True
            reporter.warning(f"slice {i + 1} ({sl.rows:,} rows) was stopped; the report holds "
                             f"the {len(points)} slice(s) that finished")
            break
        points.append(point)
        done.append((point.steps, point.train_seconds, point.slice_seconds - point.train_seconds))
        reporter.info(f"slice {i + 1} of {len(plan)} done in {_duration(point.slice_seconds)}: "
                      f"{scoring.metric} {'n/a' if point.value is None else f'{point.value:.4f}'}")
    judged = verdict([p.rows for p in points], [p.value for p in points], scoring.metric)
    curve = Curve(name=out.name, runs=str(out / DEFAULT_RUNS_DIR), metric=scoring.metric,
                  lower_is_better=RULES[scoring.metric].lower_is_better,
                  total_rows=len(train_ex), evaluated_on=scoring.where,
                  eval_rows=len(scoring.data.rows) if scoring.data is not None else None,
                  training=training, points=points, verdict=judged, notes=notes,
                  stopped=stopped)
    report = write_curve_report(out, curve)
    return CurveResult(curve, out, report)
