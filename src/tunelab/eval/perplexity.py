"""Perplexity of held-out text or chats, over the tokens training would learn.

Rows are tokenized with ``tunelab.data.template.tokenize_example``, the function
training uses: chats are scored on their assistant answers (end-of-turn included),
plain text on every token. The model's ``nll`` callable returns one
``(sum of negative log-likelihood, tokens)`` per row, batch by batch, so only sums are
kept: logits are never accumulated over the set.

This module knows nothing of models; the recipe builds ``nll``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tunelab.data.template import tokenize_example
from tunelab.errors import DataError
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import ModelCallables, TaskResult


def _loss_stat(nll: np.ndarray, tokens: np.ndarray):
    def stat(idx: np.ndarray) -> float | None:
        n = tokens[idx].sum()
        return float(nll[idx].sum() / n) if n else None

    return stat


def _ppl_stat(nll: np.ndarray, tokens: np.ndarray):
    loss = _loss_stat(nll, tokens)

    def stat(idx: np.ndarray) -> float | None:
        value = loss(idx)
        return None if value is None else math.exp(min(value, 50.0))  # capped: no overflow

    return stat


def run_perplexity(model: ModelCallables, rows: Sequence[EvalRow], chunk: int = 64) -> TaskResult:
    """Token-weighted loss and perplexity of the rows' answer tokens.

    Args:
        model: callables with ``nll`` and ``tokenizer``.
        rows: rows loaded from training-format files (they keep their ``example``).
        chunk: rows tokenized and handed to ``nll`` at a time (bounds memory).

    Returns:
        Metrics ``loss`` (nats per token), ``perplexity``, ``tokens``, ``rows``.

    Raises:
        DataError: the model cannot score tokens, a row is not from a training-format
            file, or no row has an answer token.
    """
    if model.nll is None or model.tokenizer is None:
        raise DataError(f"{model.name}: this model cannot score tokens",
                        hint="load it with tunelab.recipes.evaluate")
    if any(r.example is None for r in rows):
        raise DataError("perplexity needs chats or plain text, not a --text-field table",
                        hint="drop --text-field and give a chat, Alpaca or text file")
    sums: list[float] = []
    counts: list[int] = []
    for start in range(0, len(rows), chunk):
        part = [tokenize_example(model.tokenizer, r.example, model.chat_template,
                                 model.tool_format)
                for r in rows[start:start + chunk] if r.example is not None]  # all: checked above
        for s, n in model.nll(part):
            sums.append(float(s))
            counts.append(int(n))
    nll, tokens = np.array(sums, dtype=float), np.array(counts, dtype=float)
    if tokens.sum() == 0:
        raise DataError("no row has an answer token to score",
                        hint="give chats with assistant answers, or plain text")
    loss = float(nll.sum() / tokens.sum())
    metrics = {"rows": len(rows), "tokens": int(tokens.sum()), "loss": loss,
               "perplexity": math.exp(min(loss, 50.0))}
    records = [{"id": r.id, "answer": None, "predicted": None, "reference": None,
                "nll": s, "tokens": n,
                "loss": s / n if n else None} for r, s, n in zip(rows, sums, counts, strict=True)]
    stats = {"loss": _loss_stat(nll, tokens), "perplexity": _ppl_stat(nll, tokens)}
    return TaskResult("perplexity", model.name, metrics, records, stats, primary="loss",
                      lower_is_better=frozenset({"loss", "perplexity"}))
