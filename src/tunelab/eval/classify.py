"""Classification evaluation: map free-text answers to labels and score them.

A model's answer is matched to one of the known labels (``match_label``); answers that
match none count as wrong and are tallied in their own "unparseable" column. Metrics
follow scikit-learn's definitions (a class never predicted has precision 0).

This module knows nothing of engines, models or HTTP: ``evaluate_classifier`` takes a
``predict`` callable that answers a batch of chats, e.g. ``GenerationEngine.generate``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

from tunelab.data.example import Example, Message

UNPARSEABLE = "unparseable"  # name of the confusion-matrix column for unmatched answers

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_SPACE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Casefold, drop punctuation, collapse whitespace: ``" Team-Atlas!\\n"`` → ``"team atlas"``."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.casefold())).strip()


def match_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer names, or None.

    An exact match after ``normalize_answer`` wins; otherwise the answer must contain
    exactly one label as whole words ("It goes to Atlas." → "Atlas"). An answer naming
    two labels, or none, is None.
    """
    norm = normalize_answer(answer)
    by_norm = {normalize_answer(label): label for label in labels}
    if norm in by_norm:
        return by_norm[norm]
    padded = f" {norm} "
    found = {label for key, label in by_norm.items() if key and f" {key} " in padded}
    # A label contained in a longer found label ("plus" in "plus pro") is not a second answer.
    found = {a for a in found
             if not any(a != b and f" {normalize_answer(a)} " in f" {normalize_answer(b)} "
                        for b in found)}
    return found.pop() if len(found) == 1 else None


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _f1(p: float, r: float) -> float:
    return _safe_div(2 * p * r, p + r)


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str | None],
                           labels: Sequence[str]) -> dict:
    """Accuracy, F1 scores and the confusion matrix of predicted labels.

    Args:
        y_true: the true label of each example; each must be in ``labels``.
        y_pred: the predicted label, or None where the answer matched no label.
        labels: the classes, in the order of the confusion matrix.

    Returns:
        ``n``, ``accuracy`` (unparseable counts as wrong), ``macro_f1``, ``micro_f1``,
        ``per_class`` (``{label: {precision, recall, f1, support}}``), ``labels``,
        ``confusion_matrix`` (rows: true labels in ``labels`` order; columns: the
        labels, then ``"unparseable"``) and ``unparseable`` (count).

    Raises:
        ValueError: lengths differ, a true label is not in ``labels``, or a prediction
            is neither None nor in ``labels``.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    index = {label: i for i, label in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError(f"labels has duplicates: {list(labels)}")
    bad_true = sorted({t for t in y_true if t not in index})
    bad_pred = sorted({p for p in y_pred if p is not None and p not in index})
    if bad_true or bad_pred:
        raise ValueError(f"labels not in {list(labels)}: true {bad_true}, predicted {bad_pred}")

    k = len(labels)
    matrix = [[0] * (k + 1) for _ in range(k)]  # last column: unparseable
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[index[t]][k if p is None else index[p]] += 1

    n = len(y_true)
    correct = sum(matrix[i][i] for i in range(k))
    per_class = {}
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        predicted = sum(matrix[r][i] for r in range(k))
        support = sum(matrix[i])
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        per_class[label] = {"precision": precision, "recall": recall,
                            "f1": _f1(precision, recall), "support": support}
    # Micro over the known labels: unparseable answers are false negatives, never false
    # positives, so micro precision can exceed accuracy while micro recall equals it.
    n_predicted = sum(matrix[r][c] for r in range(k) for c in range(k))
    micro_p = _safe_div(correct, n_predicted)
    micro_r = _safe_div(correct, n)
    return {
        "n": n,
        "accuracy": _safe_div(correct, n),
        "macro_f1": _safe_div(sum(c["f1"] for c in per_class.values()), k),
        "micro_f1": _f1(micro_p, micro_r),
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": matrix,
        "confusion_columns": [*labels, UNPARSEABLE],
        "unparseable": sum(matrix[i][k] for i in range(k)),
    }


def _prompt_and_truth(example: Example, label_key: str) -> tuple[list[Message], str]:
    msgs = list(example.messages)
    last_assistant = next((m for m in reversed(msgs) if m.role == "assistant"), None)
    if msgs and msgs[-1].role == "assistant":
        msgs = msgs[:-1]
    if label_key in example.meta:
        truth = str(example.meta[label_key])
    elif last_assistant is not None:
        truth = last_assistant.content.strip()
    else:
        raise ValueError(
            f"{example.source}:{example.line}: no meta[{label_key!r}] and no assistant "
            "message to take the true label from"
        )
    return msgs, truth


def evaluate_classifier(predict: Callable[[list[list[Message]]], list[str]],
                        examples: Sequence[Example], labels: Sequence[str],
                        label_key: str = "label") -> dict:
    """Ask ``predict`` to answer each example's chat and score the answers.

    Args:
        predict: answers a list of chats with one string each (in order).
        examples: chats; the final assistant turn, if any, is the reference and is
            not sent.
        labels: the classes.
        label_key: the ``meta`` key holding the true label; without it, the last
            assistant message is the truth.

    Returns:
        ``classification_metrics`` plus ``predictions``: one
        ``{"id", "answer", "predicted", "true"}`` per example.

    Raises:
        ValueError: an example has no true label, a true label is not in ``labels``,
            or ``predict`` returned the wrong number of answers.
    """
    prompts, truths = [], []
    for ex in examples:
        msgs, truth = _prompt_and_truth(ex, label_key)
        prompts.append(msgs)
        truths.append(truth)
    answers = list(predict(prompts))
    if len(answers) != len(prompts):
        raise ValueError(f"predict returned {len(answers)} answers for {len(prompts)} prompts")
    predicted = [match_label(a, labels) for a in answers]
    metrics = classification_metrics(truths, predicted, labels)
    metrics["predictions"] = [
        {"id": ex.meta.get("id", f"{ex.source}:{ex.line}"), "answer": a, "predicted": p, "true": t}
        for ex, a, p, t in zip(examples, answers, predicted, truths, strict=True)
    ]
    return metrics
