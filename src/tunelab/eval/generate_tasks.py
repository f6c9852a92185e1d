"""Free generation scored against references: exact match, ROUGE-L, BLEU, chrF.

Exact match compares answers after a normalizer (``exact``: casefold and strip
punctuation; ``gsm8k``: the number after ``####`` or else the last number; ``last_number``;
``number``: the first number). ROUGE-L comes from ``rouge-score``, BLEU and chrF from
``sacrebleu`` (``tunelab.eval.metrics``).

This module knows nothing of models: it takes the ``predict`` callable.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunelab.data.task import TaskPrompt, task_chat
from tunelab.eval.metrics import NORMALIZERS, text_metrics
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import ModelCallables, TaskResult, mean_stat


def generation_result(model_name: str, rows: Sequence[EvalRow], answers: Sequence[str],
                      normalizer: str) -> TaskResult:
    """Score generated answers; per-row exact match and ROUGE-L feed slices and bootstrap."""
    refs = [r.reference or "" for r in rows]
    m = text_metrics(list(answers), refs, normalizer)
    exact, rl = m.pop("exact"), m.pop("rouge_l_rows")
    norm = NORMALIZERS[normalizer]
    records = [{"id": r.id, "answer": a, "predicted": norm(a), "reference": ref,
                "normalized_reference": norm(ref), "exact": e, "rouge_l": s}
               for r, a, ref, e, s in zip(rows, answers, refs, exact, rl, strict=True)]
    stats = {"exact_match": mean_stat([1.0 if e else 0.0 for e in exact]),
             "rouge_l": mean_stat(rl)}
    return TaskResult("generate", model_name, m, records, stats, primary="exact_match")


def run_generate(model: ModelCallables, rows: Sequence[EvalRow], normalizer: str = "exact",
                 prompt: TaskPrompt | None = None) -> TaskResult:
    """Generate an answer per row and score it against the row's reference.

    Args:
        model: the model's callables (``predict`` is used).
        rows: rows with references.
        normalizer: one of ``tunelab.eval.metrics.NORMALIZERS``.
        prompt: the task's prompt (``tunelab.data.task``); None: the generate defaults
            (no system turn, the text as the user turn).
    """
    prompt = prompt or TaskPrompt("generate")
    chats = [task_chat(prompt, r.prompt) for r in rows]
    return generation_result(model.name, rows, model.predict(chats), normalizer)
