"""A loaded model as the callables an evaluation takes: generate, score choices, sum NLL.

``predict`` is ``GenerationEngine.generate`` (batched, left-padded, greedy, stops at EOS
and end-of-turn). ``nll`` right-pads tokenized rows and sums the cross-entropy of each
row's answer tokens, running the LM head only where a label is (as training does); a
batch's numbers are reduced to two per row before the next batch, so logits are never
accumulated. ``score_choices`` renders each chat with each candidate as the assistant
answer through ``tokenize_example`` (the training renderer, end-of-turn included) and
returns the summed log-likelihood of the answer tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.data.example import Example, Message
from tunelab.data.template import IGNORE_INDEX, TokenizedExample, tokenize_example
from tunelab.eval.tasks import ModelCallables
from tunelab.models.runs import load_for_inference
from tunelab.serve.engine import GenerationEngine
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.train.batching import collate
from tunelab.train.loss import answer_logits


@torch.inference_mode()
def token_nll(model: Any, rows: Sequence[TokenizedExample], pad_id: int,
              batch_size: int) -> list[tuple[float, int]]:
    """Per row, the summed cross-entropy of its labelled tokens and their number.

    Args:
        model: a causal LM (plain or peft), on its device.
        rows: tokenized rows (labels are ``IGNORE_INDEX`` where not scored).
        pad_id: the padding id (masked out).
        batch_size: rows per forward pass; shortest first, to cut padding.
    """
    was_training = getattr(model, "training", False)
    model.eval()
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            mb = collate([rows[i] for i in idx], idx, pad_id)
            ids, mask, labels = (t.to(device) for t in (mb.input_ids, mb.attention_mask, mb.labels))
            logits, targets = answer_logits(model, ids, mask, labels)
            if targets.numel() == 0:
                continue
            losses = F.cross_entropy(logits.float(), targets, reduction="none")
            keep = labels[:, 1:] != IGNORE_INDEX
            owner = keep.nonzero()[:, 0]  # the batch row of each scored token
            sums = torch.zeros(len(idx), device=device).index_add_(0, owner, losses)
            counts = keep.sum(dim=1)
            for k, i in enumerate(idx):
                out[i] = (float(sums[k]), int(counts[k]))
    finally:
        model.train(was_training)
    return out


def _with_answer(chat: Sequence[Message], answer: str) -> Example:
    # Earlier assistant turns (few-shot examples) are context, not the scored answer.
    msgs = [Message(m.role, m.content, 0 if m.role == "assistant" else None) for m in chat]
    return Example(messages=[*msgs, Message("assistant", answer)])


def build_callables(model: Any, tokenizer: Any, chat_template: str | None, name: str,
                    max_new_tokens: int, batch_size: int,
                    reporter: Reporter = SILENT) -> ModelCallables:
    """Wrap a loaded model and tokenizer as ``ModelCallables``.

    Args:
        model, tokenizer: as loaded (``tunelab.models.runs``).
        chat_template: the run's template, None for the tokenizer's own.
        name: the model's name in reports.
        max_new_tokens, batch_size: generation settings.
        reporter: shows a progress bar while generating.
    """
    engine = GenerationEngine(model, tokenizer, chat_template)
    pad_id = engine.pad_token_id

    def predict(chats: list[list[Message]]) -> list[str]:
        return engine.generate(chats, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               progress=reporter.bar)

    def nll(rows: list[TokenizedExample]) -> list[tuple[float, int]]:
        return token_nll(model, rows, pad_id, batch_size)

    def score_choices(chats: list[list[Message]], choices: list[list[str]]) -> list[list[float]]:
        flat = [tokenize_example(tokenizer, _with_answer(chat, c), chat_template)
                for chat, cs in zip(chats, choices, strict=True) for c in cs]
        sums = nll(flat)
        out, k = [], 0
        for cs in choices:
            out.append([-sums[k + j][0] for j in range(len(cs))])
            k += len(cs)
        return out

    return ModelCallables(name=name, predict=predict, score_choices=score_choices, nll=nll,
                          tokenizer=tokenizer, chat_template=chat_template)


def load_callables(ref: str, runs_dir: str, max_new_tokens: int, batch_size: int,
                   reporter: Reporter = SILENT) -> ModelCallables:
    """Load a run folder or model reference and wrap it as ``ModelCallables``.

    Raises:
        ModelNotFoundError: the reference names nothing known.
        StoreError: a run folder is incomplete.
    """
    loaded = load_for_inference(ref, runs_dir, reporter=reporter)
    return build_callables(loaded.model, loaded.tokenizer, loaded.chat_template, loaded.label,
                           max_new_tokens, batch_size, reporter)
