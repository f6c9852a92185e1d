"""Models judged on held-out preference pairs: how strongly each prefers the chosen answer.

Per pair, a model's **margin** is ``log p(chosen) - log p(rejected)``: the summed
log-probabilities of the answer tokens, rendered as training renders a pair
(``tunelab.train.preference.pair_logps``). The result is a ``TaskResult`` of task
``preference`` whose statistics are the mean margin (nats; the primary, higher is
better) and the **accuracy**, the share of pairs whose chosen answer is the likelier. So
two models scored on the same pairs go through ``tunelab.eval.compare`` like any task,
and the paired-bootstrap difference of the mean margins, new minus old, is the mean DPO
reward (before beta) of the new model with the old one as its reference.

This module knows nothing of runs, files or configs: it receives loaded models and the
pairs, and a pair longer than ``max_length`` tokens is not scored by either model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tunelab.data.example import Example
from tunelab.eval.tasks import TaskResult, mean_stat
from tunelab.train.preference import pair_logps

TASK = "preference"


def preference_result(name: str, logps: Sequence[tuple[float, float]],
                      lines: Sequence[int | None]) -> TaskResult:
    """The ``TaskResult`` of one model's (chosen, rejected) log-probs on scored pairs.

    Args:
        name: the model's name in tables.
        logps: per scored pair, the summed answer log-probs of (chosen, rejected).
        lines: each pair's line in its file (for the per-row records).
    """
    margins = np.array([c - r for c, r in logps], dtype=float)
    prefers = (margins > 0).astype(float)
    rows = [{"id": line, "logp_chosen": c, "logp_rejected": r, "margin": float(m)}
            for line, (c, r), m in zip(lines, logps, margins, strict=True)]
    metrics = {"pairs": len(rows), "margin": float(margins.mean()) if len(rows) else None,
               "accuracy": float(prefers.mean()) if len(rows) else None}
    return TaskResult(TASK, name, metrics, rows,
                      {"margin": mean_stat(margins), "accuracy": mean_stat(prefers)},
                      primary="margin")


def score_pairs(name: str, model: Any, tokenizer: Any, examples: Sequence[Example],
                batch_size: int, chat_template: str | None,
                max_length: int) -> tuple[TaskResult, list[int]]:
    """Score ``model`` on ``examples`` (pairs); also returns the indices of the scored ones.

    Raises:
        TrainingError: no pair is ``max_length`` tokens or shorter.
        DataError: an example is not a pair, or the template cannot mask the answers.
    """
    idx, logps = pair_logps(model, tokenizer, examples, batch_size, chat_template, max_length)
    return preference_result(name, logps, [examples[i].line for i in idx]), idx


def reward_accuracy(old: TaskResult, new: TaskResult) -> float | None:
    """The share of pairs whose margin grew from ``old`` to ``new`` (both on the same pairs).

    DPO's reward accuracy of the new model with the old one as its reference.
    """
    if not old.rows or len(old.rows) != len(new.rows):
        return None
    return sum(b["margin"] > a["margin"] for a, b in zip(old.rows, new.rows, strict=True)) / len(old.rows)
