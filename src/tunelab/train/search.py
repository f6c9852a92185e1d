"""A search space, its sampler and pruner (optuna), and what a finished search reports.

Parameter names are the dotted config paths of ``search.params`` (``train.learning_rate``),
so a trial's parameters are directly the overrides of its config. This module knows
nothing of run folders or the CLI; the study's storage and trial count live in
``tunelab.train.study``.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import GridSampler
from optuna.trial import TrialState

from tunelab.config.schema import SearchParam, SearchSettings
from tunelab.files import write_text_atomic


class _AskTellGridSampler(GridSampler):
    """GridSampler without its stop request after the last grid point: ``Study.stop`` is
    only allowed inside ``optimize``, and the trial count is ours (``ask_next``)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:  # noqa: ARG002
        return None


def suggest(trial: optuna.Trial, params: dict[str, SearchParam]) -> dict[str, Any]:
    """Sample (or, for a re-queued trial, read back) a value for every parameter."""
    values: dict[str, Any] = {}
    for path, p in params.items():
        if p.type == "categorical":
            values[path] = trial.suggest_categorical(path, p.choices)
        elif p.type == "int":
            assert p.low is not None and p.high is not None  # SearchParam requires both
            values[path] = trial.suggest_int(path, int(p.low), int(p.high),
                                             step=int(p.step or 1), log=p.log)
        else:
            values[path] = trial.suggest_float(path, p.low, p.high, step=p.step, log=p.log)
    return values


def grid_size(settings: SearchSettings) -> int:
    """Points of the full grid (every parameter's values, crossed)."""
    return math.prod(len(p.grid_values() or []) for p in settings.params.values())


def build_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    """The sampler named by ``search.sampler``, seeded with ``search.seed``."""
    if settings.sampler == "grid":
        space = {path: p.grid_values() for path, p in settings.params.items()}
        return _AskTellGridSampler(space, seed=settings.seed)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    # constant_liar: running trials count as bad guesses, so parallel workers spread out.
    return optuna.samplers.TPESampler(seed=settings.seed, constant_liar=True)


def build_pruner(settings: SearchSettings) -> optuna.pruners.BasePruner:
    """The pruner named by ``search.pruner``; it judges the validation values a trial reports."""
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials,
                                           n_warmup_steps=settings.warmup_steps)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, settings.warmup_steps))
    return optuna.pruners.NopPruner()


def results_rows(study: optuna.Study, params: list[str]) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, duration, parameters, retry link."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        secs = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     "pruned_at_step": last if t.state == TrialState.PRUNED else None,
                     "seconds": round(secs, 1) if secs is not None else None,
                     **{p: t.params.get(p) for p in params},
                     "retry_of": t.user_attrs.get("retry_of"), "run": t.user_attrs.get("run")})
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """The results table as CSV."""
    if not rows:
        return
    buffer = io.StringIO(newline="")
    w = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def format_table(rows: list[dict[str, Any]], params: list[str], maximize: bool) -> str:
    """The results as a text table, best completed trial first."""
    def key(r: dict) -> tuple:
        done = r["state"] == "complete" and r["value"] is not None
        v = r["value"] if done else 0.0
        return (not done, -v if maximize else v, r["trial"])

    cols = ["trial", "state", "value", *params, "seconds"]
    cells = [[f"{r[c]:.1f}" if c == "seconds" and r[c] is not None else _fmt(r[c]) for c in cols]
             for r in sorted(rows, key=key)]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}"
    return str(v)


def write_plots(study: optuna.Study, folder: Path) -> list[str]:
    """optimization_history.png and param_importances.png; returns what could not be drawn.

    Importance needs at least two finished trials whose parameters vary; with fewer it
    is skipped with a reason rather than failing the search.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    skipped = []
    for name, draw in (("optimization_history", ovm.plot_optimization_history),
                       ("param_importances", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = draw(study)
            ax.figure.set_size_inches(8, 5)
            ax.figure.tight_layout()
            ax.figure.savefig(folder / f"{name}.png", dpi=100)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            skipped.append(f"{name}.png: {e}")
        finally:
            plt.close("all")
    return skipped
