"""Regression by generation: a number parsed from each answer, scored against the truth.

The first number in an answer is the prediction ("4 out of 5" → 4); an answer with no
number is unparseable, counted, and left out of the error metrics (so compare
``parsed`` between models too). MAE, RMSE and R² come from scikit-learn, Pearson and
Spearman from SciPy (``tunelab.eval.metrics.regression_metrics``).

This module knows nothing of models: it takes the ``predict`` callable.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunelab.data.task import TaskPrompt, task_chat
from tunelab.errors import DataError
from tunelab.eval.metrics import first_number, regression_metrics
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import ModelCallables, TaskResult, mean_stat


def true_values(rows: Sequence[EvalRow]) -> list[float]:
    """Each row's reference as a number.

    Raises:
        DataError: a reference holds no number; every such row is listed.
    """
    values, bad = [], []
    for r in rows:
        v = first_number(r.reference or "")
        if v is None:
            bad.append(f"{r.id}: reference {r.reference!r} is not a number")
        else:
            values.append(v)
    if bad:
        raise DataError(f"{len(bad)} row(s) have no numeric reference", findings=bad,
                        hint="point --label-field at the numeric column")
    return values


def regression_result(model_name: str, rows: Sequence[EvalRow], answers: Sequence[str]) -> TaskResult:
    """Parse numbers from answers and score them; per-row absolute errors for slices."""
    truth = true_values(rows)
    parsed = [first_number(a) for a in answers]
    pairs = [(t, p) for t, p in zip(truth, parsed, strict=True) if p is not None]
    metrics = regression_metrics([t for t, _ in pairs], [p for _, p in pairs])
    n = len(rows)
    metrics.update(rows=n, parsed=len(pairs), unparseable=n - len(pairs),
                   parsed_rate=len(pairs) / n if n else 0.0)
    abs_err = [None if p is None else abs(p - t) for t, p in zip(truth, parsed, strict=True)]
    sq_err = [None if e is None else e * e for e in abs_err]
    records = [{"id": r.id, "answer": a, "predicted": p, "reference": t, "abs_error": e}
               for r, a, p, t, e in zip(rows, answers, parsed, truth, abs_err, strict=True)]
    stats = {"mae": mean_stat(abs_err), "mse": mean_stat(sq_err),
             "parsed_rate": mean_stat([0.0 if p is None else 1.0 for p in parsed])}
    return TaskResult("regress", model_name, metrics, records, stats, primary="mae",
                      lower_is_better=frozenset({"mae", "mse"}))


def run_regress(model: ModelCallables, rows: Sequence[EvalRow],
                prompt: TaskPrompt | None = None) -> TaskResult:
    """Ask for a number per row and score the parsed numbers.

    Args:
        model: the model's callables (``predict`` is used).
        rows: rows whose reference is a number.
        prompt: the task's prompt (``tunelab.data.task``); None: the regress defaults
            (a system turn asking for a single number, the text as the user turn).

    Raises:
        DataError: a reference is not a number.
    """
    true_values(rows)  # refuse bad references before the model runs
    prompt = prompt or TaskPrompt("regress")
    chats = [task_chat(prompt, r.prompt) for r in rows]
    return regression_result(model.name, rows, model.predict(chats))
