"""Evaluation tasks during training: the ``on_validation`` hook that runs them.

A run config may list ``eval_tasks`` (``tunelab.config.evaluation.TrainEvalTask``). Their
rows are read and checked once, before training starts; at each validation whose step
is a multiple of a task's ``every`` (and after the last step) the task runs on the model
being trained, through the same callables as `tunelab eval`, and its scalar metrics go
to the run's metrics log (``metrics.jsonl`` and TensorBoard) as split ``eval_<name>``.
Generation and scoring work batch by batch, so logits never accumulate over the set;
the model is put back in training mode afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tunelab.config.evaluation import TrainEvalTask
from tunelab.eval.callables import build_callables
from tunelab.eval.runner import load_eval_data, task_runner
from tunelab.tracking.reporter import SILENT, Reporter


def task_name(task: TrainEvalTask) -> str:
    return task.name or f"{task.task}_{Path(task.data).stem}"


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def eval_hook(tasks: Sequence[TrainEvalTask], model: Callable[[], Any], tokenizer: Any,
              chat_template: str | None, sink: Any, total_steps: int,
              inner: Callable[[int, dict[str, float]], bool] | None = None,
              reporter: Reporter = SILENT,
              tool_format: str | None = None) -> Callable[[int, dict[str, float]], bool]:
    """An ``on_validation`` hook that runs ``tasks`` and logs their metrics.

    Args:
        tasks: the run config's ``eval_tasks``.
        model: returns the model being trained (it may be re-wrapped during setup).
        tokenizer, chat_template: the run's.
        sink: the run's metric sink (``log(split, step, metrics)``).
        total_steps: the run's last step (tasks always run there).
        inner: another hook to call after (its answer decides early stopping).
        reporter: told what the tasks' rows are (labels taken from the data).
        tool_format: the run's tool rendering (``data.tool_format`` resolved), so a
            tool_call task is asked as the finished run will be; None: probed.

    Raises:
        DataError, ConfigError: a task's rows or settings are unusable (before training).
    """
    prepared = [(t, load_eval_data(t.data, t, reporter)) for t in tasks]

    def hook(step: int, metrics: dict[str, float]) -> bool:
        for task, data in prepared:
            if step % task.every and step != total_steps:
                continue
            assert task.max_new_tokens is not None  # EvalSettings fills in the task's default
            callables = build_callables(model(), tokenizer, chat_template, task_name(task),
                                        task.max_new_tokens, task.batch_size,
                                        tool_format=tool_format)
            result = task_runner(task, data, callables)(data.rows)
            sink.log(f"eval_{task_name(task)}", step, _scalars(result.metrics))
        return inner(step, metrics) if inner is not None else False

    return hook
