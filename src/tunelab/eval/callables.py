"""A loaded model as the callables an evaluation takes: generate, score choices, sum NLL.

``predict`` is ``GenerationEngine.generate`` (batched, left-padded, greedy, stops at EOS
and end-of-turn). ``nll`` right-pads tokenized rows and sums the cross-entropy of each
row's answer tokens, running the LM head only where a label is (as training does); a
batch's numbers are reduced to two per row before the next batch, so logits are never
accumulated. ``score_choices`` renders each chat with each candidate as the assistant
answer through ``tokenize_example`` (the training renderer, end-of-turn included) and
returns the summed log-likelihood of the answer tokens; the prompt, the same tokens for
every candidate, runs once and its key/value cache is shared by the candidates
(``choice_log_likelihoods``), which halves the work of a two-label classifier.
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


@torch.inference_mode()
def choice_log_likelihoods(model: Any, prompts: Sequence[list[int]],
                           answers: Sequence[Sequence[list[int]]], pad_id: int,
                           batch_size: int) -> list[list[float]]:
    """Per prompt, the summed log-likelihood of each candidate answer's tokens after it.

    The prompts of a batch run once, left-padded, keeping only the last position's
    logits; their key/value cache is copied to each candidate, and the candidates'
    tokens but the last run on it in one more forward pass.

    Args:
        model: a causal LM (plain or peft), on its device.
        prompts: token ids of each prompt.
        answers: per prompt, the token ids of each candidate (at least one token each).
        pad_id: the padding id (masked out).
        batch_size: prompts per forward pass; shortest first.
    """
    was_training = getattr(model, "training", False)
    model.eval()
    device = next(model.parameters()).device
    out: list[list[float]] = [[0.0] * len(a) for a in answers]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                n = len(prompts[i])
                ids[r, width - n:] = torch.tensor(prompts[i])
                mask[r, width - n:] = 1
            ids, mask = ids.to(device), mask.to(device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            first = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                          logits_to_keep=1)
            first_lp = F.log_softmax(first.logits[:, -1].float(), dim=-1)
            owner = [r for r, i in enumerate(idx) for _ in answers[i]]
            flat = [list(a) for i in idx for a in answers[i]]
            totals = [float(first_lp[o, a[0]]) for o, a in zip(owner, flat, strict=True)]
            rest = max(len(a) for a in flat) - 1
            if rest > 0:
                cache = first.cache
                cache.reorder_cache(torch.tensor(owner, device=device))
                tail = torch.full((len(flat), rest), pad_id, dtype=torch.long)
                tail_mask = torch.zeros((len(flat), rest), dtype=torch.long)
                for j, a in enumerate(flat):
                    tail[j, :len(a) - 1] = torch.tensor(a[:-1])
                    tail_mask[j, :len(a) - 1] = 1
                owners = torch.tensor(owner, device=device)
                full_mask = torch.cat([mask[owners], tail_mask.to(device)], dim=1)
                tail_pos = mask[owners].sum(-1, keepdim=True) + torch.arange(rest, device=device)
                more = model(input_ids=tail.to(device), attention_mask=full_mask,
                             position_ids=tail_pos, cache=cache, use_cache=True)
                lp = F.log_softmax(more.logits.float(), dim=-1)
                for j, a in enumerate(flat):
                    totals[j] += sum(float(lp[j, t - 1, a[t]]) for t in range(1, len(a)))
            k = 0
            for i in idx:
                out[i] = totals[k:k + len(answers[i])]
                k += len(answers[i])
    finally:
        model.train(was_training)
    return out


def _split_answer(row: TokenizedExample) -> tuple[list[int], list[int]]:
    """A tokenized row as (the tokens before its answer, the answer's labelled tokens)."""
    first = next(i for i, x in enumerate(row.labels) if x != IGNORE_INDEX)
    last = max(i for i, x in enumerate(row.labels) if x != IGNORE_INDEX)
    return row.input_ids[:first], row.input_ids[first:last + 1]


def _with_answer(chat: Sequence[Message], answer: str) -> Example:
    # Earlier assistant turns (few-shot examples) are context, not the scored answer.
    msgs = [Message(m.role, m.content, 0 if m.role == "assistant" else None) for m in chat]
    return Example(messages=[*msgs, Message("assistant", answer)])


def build_callables(model: Any, tokenizer: Any, chat_template: str | None, name: str,
                    max_new_tokens: int, batch_size: int,
                    reporter: Reporter = SILENT, tool_format: str | None = None) -> ModelCallables:
    """Wrap a loaded model and tokenizer as ``ModelCallables``.

    Args:
        model, tokenizer: as loaded (``tunelab.models.runs``).
        chat_template: the run's template, None for the tokenizer's own.
        name: the model's name in reports.
        max_new_tokens, batch_size: generation settings.
        reporter: shows a progress bar while generating.
        tool_format: the run's stored tool rendering; None: probed from the template.
    """
    engine = GenerationEngine(model, tokenizer, chat_template, tool_format)
    pad_id = engine.pad_token_id

    def predict(chats: list[list[Message]], tools: list[tuple[dict, ...]] | None = None) -> list[str]:
        return engine.generate(chats, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               progress=reporter.bar, tools=tools)

    def nll(rows: list[TokenizedExample]) -> list[tuple[float, int]]:
        return token_nll(model, rows, pad_id, batch_size)

    def score_choices(chats: list[list[Message]], choices: list[list[str]]) -> list[list[float]]:
        prompts, answers = [], []
        for chat, cs in zip(chats, choices, strict=True):
            rows = [_split_answer(tokenize_example(tokenizer, _with_answer(chat, c),
                                                   chat_template, tool_format))
                    for c in cs]
            # The renderer tokenizes the prompt apart from the answer: one prompt per chat.
            assert all(p == rows[0][0] for p, _ in rows), "a chat's prompt differs per answer"
            prompts.append(rows[0][0])
            answers.append([a for _, a in rows])
        return choice_log_likelihoods(model, prompts, answers, pad_id, batch_size)

    return ModelCallables(name=name, predict=predict, score_choices=score_choices, nll=nll,
                          tokenizer=tokenizer, chat_template=chat_template,
                          tool_format=tool_format)


def load_callables(ref: str, runs_dir: str, max_new_tokens: int, batch_size: int,
                   reporter: Reporter = SILENT) -> ModelCallables:
    """Load a run folder or model reference and wrap it as ``ModelCallables``.

    Raises:
        ModelNotFoundError: the reference names nothing known.
        StoreError: a run folder is incomplete.
    """
    loaded = load_for_inference(ref, runs_dir, reporter=reporter)
    return build_callables(loaded.model, loaded.tokenizer, loaded.chat_template, loaded.label,
                           max_new_tokens, batch_size, reporter, loaded.tool_format)
