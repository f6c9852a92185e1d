"""`tunelab train`: a run config in, a finished (or resumable) run folder out.

The recipe joins what the layers below do on their own: training (one run, or phases,
``tunelab.train.phased``) and the evaluation tasks a config lists to run during
training (``tunelab.eval.during_training``). Everything else (the run folder, resume,
several processes) is the training layer's.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.config.schema import RunConfig
from tunelab.eval.during_training import eval_hook
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.train.phased import run_training


def run_train(cfg: RunConfig, reporter: Reporter = SILENT, resume: str | None = None,
              force_resume: bool = False) -> Path:
    """Train per ``cfg``; returns the run folder (complete when it holds ``summary.json``).

    Args:
        cfg: the validated run config.
        reporter: progress lines, warnings and the progress bar.
        resume: None (a new run), ``auto`` or a run/checkpoint folder to continue.
        force_resume: resume even when model, data, batch, accumulation or seed changed.

    Raises:
        TunelabError: any problem with the model, the data or training.
    """
    return run_training(cfg, reporter, resume, force_resume, task_hook=eval_hook)
