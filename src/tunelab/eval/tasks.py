"""What every task evaluator takes and returns, and the classification task.

A model enters an evaluation only as callables (``ModelCallables``): ``predict`` answers
chats, ``score_choices`` gives the log-likelihood of each candidate answer, ``nll`` sums
the negative log-likelihood of tokenized rows. The recipe that loads the model builds
them; this package never loads a model and knows nothing of engines or HTTP.

A task returns a ``TaskResult``: the headline metrics (JSON-ready), one record per row,
and ``stats``: functions from an array of row indices to one number. Slices, the paired
bootstrap of ``--compare`` and counterfactual group gaps all reuse ``stats``, so a
metric is computed the same way on the whole set, a slice and a resample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunelab.data.example import Message
from tunelab.data.task import LabelSet, TaskPrompt, task_chat
from tunelab.errors import DataError
from tunelab.eval.classify import classification_metrics, match_label
from tunelab.eval.rows import EvalRow

Chats = list[list[Message]]
Stat = Callable[[np.ndarray], float | None]


@dataclass
class ModelCallables:
    """One model, as the callables an evaluation needs.

    Args:
        name: how tables and reports name the model.
        predict: answers chats, one string each, in order.
        score_choices: per chat, the log-likelihood of each candidate answer.
        nll: per tokenized row, ``(sum of answer-token NLL, answer tokens)``.
        tokenizer, chat_template, tool_format: for tokenizing rows (perplexity), as the
            run rendered them.
    """

    name: str
    predict: Callable[..., list[str]]  # predict(chats, tools=None): tools per chat, or none
    score_choices: Callable[[Chats, list[list[str]]], list[list[float]]] | None = None
    nll: Callable[[list[Any]], list[tuple[float, int]]] | None = None
    tokenizer: Any = None
    chat_template: str | None = None
    tool_format: str | None = None  # how the run rendered tools (None: probe the template)


@dataclass
class TaskResult:
    """The outcome of one task on one model.

    Args:
        task: the task name.
        model: the model's name.
        metrics: headline numbers, JSON-ready.
        rows: per row ``id``, ``answer``, ``predicted``, ``reference`` and scores.
        stats: statistic name -> value on a set of row indices (None when undefined).
        primary: the statistic slices are ranked by.
        lower_is_better: statistics where a smaller value is better (errors, loss).
    """

    task: str
    model: str
    metrics: dict
    rows: list[dict]
    stats: dict[str, Stat] = field(default_factory=dict)
    primary: str = "accuracy"
    lower_is_better: frozenset[str] = frozenset()

    def stat(self, name: str, idx: np.ndarray | None = None) -> float | None:
        """A statistic on row indices (all rows when None)."""
        return self.stats[name](np.arange(len(self.rows)) if idx is None else idx)


def mean_stat(values: Sequence[float | None] | np.ndarray) -> Stat:
    """The mean over the chosen rows of per-row values; None values are left out."""
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)

    def stat(idx: np.ndarray) -> float | None:
        chosen = arr[idx]
        chosen = chosen[~np.isnan(chosen)]
        return float(chosen.mean()) if chosen.size else None

    return stat


def _macro_f1_stat(true_codes: np.ndarray, pred_codes: np.ndarray, k: int) -> Stat:
    from sklearn.metrics import f1_score

    labels = list(range(k))  # code k (unparseable) is a miss, never a predicted class

    def stat(idx: np.ndarray) -> float | None:
        if idx.size == 0:
            return None
        return float(f1_score(true_codes[idx], pred_codes[idx], labels=labels,
                              average="macro", zero_division=0))

    return stat


def _averaged_prf(t: np.ndarray, p: np.ndarray, k: int) -> dict[str, float]:
    """Macro and micro precision and recall over the known labels (scikit-learn)."""
    from sklearn.metrics import precision_recall_fscore_support

    out = {}
    for avg in ("macro", "micro"):
        prec, rec, _, _ = precision_recall_fscore_support(
            t, p, labels=list(range(k)), average=avg, zero_division=0)
        out[f"{avg}_precision"], out[f"{avg}_recall"] = float(prec), float(rec)
    return out


def check_labels(rows: Sequence[EvalRow], labels: Sequence[str], option: str = "--labels") -> None:
    """Refuse rows whose true label is not one of ``labels``, listing each.

    Raises:
        DataError: a reference is not a known label.
    """
    bad = [f"{r.id}: label {r.reference!r} is not one of {list(labels)}"
           for r in rows if r.reference not in labels]
    if bad:
        raise DataError(f"{len(bad)} row(s) have a label outside {option}", findings=bad,
                        hint=f"add the label to {option}, or fix the rows")


def classify_prompts(rows: Sequence[EvalRow], prompt: TaskPrompt) -> Chats:
    """Each row's chat as the task asks it (``tunelab.data.task.task_chat``, as in training)."""
    return [task_chat(prompt, r.prompt) for r in rows]


def _softmax(scores: Sequence[float]) -> list[float]:
    arr = np.asarray(scores, dtype=float)
    arr = np.exp(arr - arr.max())
    return [float(x) for x in arr / arr.sum()]


@dataclass
class Predictions:
    """A classifier's answers: the text, the table label (None: unparseable or abstained),
    and with likelihood scoring each label's probability (label order)."""

    answers: list[str]
    labels: list[str | None]
    probabilities: list[list[float]] | None = None


ABSTAINED = "(abstained)"  # the answer recorded when the top probability is under the threshold


def predict_labels(model: ModelCallables, chats: Chats, label_set: LabelSet,
                   method: str, abstain_below: float | None = None) -> Predictions:
    """Answers and the table label each maps to.

    ``generate``: the free answer is matched to the label words (``match_label``);
    ``likelihood``: each label word is scored as the whole answer (its tokens and the
    end of turn), the probabilities are the softmax of those log-likelihoods over the
    labels, and the likeliest wins, unless its probability is under ``abstain_below``.

    Raises:
        DataError: ``likelihood`` was asked for but the model cannot score answers.
    """
    words = label_set.words
    if method == "likelihood":
        if model.score_choices is None:
            raise DataError(f"{model.name}: this model cannot score answers by likelihood",
                            hint="use --method generate")
        probs = [_softmax(s) for s in model.score_choices(chats, [words] * len(chats))]
        answers: list[str] = []
        labels: list[str | None] = []
        for p in probs:
            best = int(np.argmax(p))
            if abstain_below is not None and p[best] < abstain_below:
                answers.append(ABSTAINED)
                labels.append(None)
            else:
                answers.append(words[best])
                labels.append(label_set.labels[best])
        return Predictions(answers, labels, probs)
    answers = list(model.predict(chats))
    if len(answers) != len(chats):
        raise DataError(f"{model.name}: {len(answers)} answers for {len(chats)} prompts",
                        hint="the predict callable must answer every chat once, in order")
    return Predictions(answers, [label_set.label_of(match_label(a, words)) for a in answers])


CALIBRATION_BINS = 10  # equal-width confidence bins of the expected calibration error


def calibration(confidence: Sequence[float], correct: Sequence[bool],
                bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error and the reliability table of top-label probabilities.

    ECE is the row-weighted mean of |accuracy - mean confidence| over equal-width
    confidence bins (Guo et al., 2017); the bins are what the reliability plot draws.
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    table, ece = [], 0.0
    for i in range(bins):
        lo, hi = edges[i], edges[i + 1]
        inside = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        n = int(inside.sum())
        if n:
            acc, mean_conf = float(ok[inside].mean()), float(conf[inside].mean())
            ece += n / conf.size * abs(acc - mean_conf)
            table.append({"low": float(lo), "high": float(hi), "n": n,
                          "confidence": mean_conf, "accuracy": acc})
    return {"ece": float(ece) if conf.size else None, "bins": table}


def classification_result(model_name: str, rows: Sequence[EvalRow], preds: Predictions,
                          label_set: LabelSet, method: str,
                          abstain_below: float | None = None) -> TaskResult:
    """Score predicted labels: metrics, per-row records and bootstrap-ready statistics.

    With probabilities (likelihood scoring) the metrics add ``calibration`` (ECE and the
    reliability bins), each record its ``probabilities`` and ``confidence``; abstained
    rows count as wrong in ``accuracy`` and are left out of ``answered_accuracy``.
    """
    labels = list(label_set.labels)
    truths = [str(r.reference) for r in rows]
    predicted = preds.labels
    metrics = classification_metrics(truths, predicted, labels)
    metrics.update(method=method, label_words={lab: label_set.word(lab) for lab in labels})
    index = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    t = np.array([index[x] for x in truths], dtype=int)
    p = np.array([k if x is None else index[x] for x in predicted], dtype=int)
    records: list[dict] = [{"id": r.id, "answer": a, "predicted": pr, "reference": tr,
                            "correct": pr == tr}
                           for r, a, pr, tr in zip(rows, preds.answers, predicted, truths, strict=True)]
    if preds.probabilities is not None:
        top = [max(ps) for ps in preds.probabilities]
        top_ok = [labels[int(np.argmax(ps))] == tr
                  for ps, tr in zip(preds.probabilities, truths, strict=True)]
        metrics["calibration"] = calibration(top, top_ok)
        metrics["ece"] = metrics["calibration"]["ece"]
        for rec, ps, c in zip(records, preds.probabilities, top, strict=True):
            rec["probabilities"] = dict(zip(labels, ps, strict=True))
            rec["confidence"] = c
        abstained = sum(a == ABSTAINED for a in preds.answers)
        answered = [ok for ok, a in zip(top_ok, preds.answers, strict=True) if a != ABSTAINED]
        metrics.update(abstain_below=abstain_below, abstained=abstained,
                       coverage=len(answered) / len(rows) if rows else 0.0,
                       answered_accuracy=sum(answered) / len(answered) if answered else None)
    metrics.update(_averaged_prf(t, p, k))
    stats = {"accuracy": mean_stat([float(x) for x in (t == p)]),
             "macro_f1": _macro_f1_stat(t, p, k)}
    return TaskResult("classify", model_name, metrics, records, stats, primary="accuracy")


def run_classify(model: ModelCallables, rows: Sequence[EvalRow], label_set: LabelSet,
                 method: str = "likelihood", prompt: TaskPrompt | None = None,
                 abstain_below: float | None = None) -> TaskResult:
    """Classify every row and score it (accuracy, macro/micro P/R/F1, confusion matrix,
    and with likelihood scoring class probabilities and calibration).

    Args:
        model: the model's callables.
        rows: rows whose reference is a label of ``label_set``.
        label_set: the labels and the words the model answers.
        method: ``likelihood`` (score each word) or ``generate`` (match the free answer).
        prompt: the task's prompt; None: the classify defaults for these words.
        abstain_below: likelihood only: no answer when the top probability is lower.

    Raises:
        DataError: a row's label is unknown, or the model cannot do ``method``.
    """
    check_labels(rows, label_set.labels)
    prompt = prompt or TaskPrompt("classify", tuple(label_set.words))
    preds = predict_labels(model, classify_prompts(rows, prompt), label_set, method, abstain_below)
    return classification_result(model.name, rows, preds, label_set, method, abstain_below)
