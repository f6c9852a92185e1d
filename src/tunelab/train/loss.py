"""The causal-LM loss at answer tokens only, normalized per optimizer step.

The loss of a step is the sum of cross-entropy over every answer token of every
micro-batch of the step, divided by the number of those tokens. Each micro-batch
contributes ``sum / step_tokens``, so the step loss and the gradients do not depend on
how a step is split into micro-batches.

The LM head runs only at positions that carry a label: the full (tokens x vocabulary)
logits are never built. Where the head is a plain linear layer, the head and the
cross-entropy run together in chunks of rows (``linear_cross_entropy``): each chunk's
logits are turned into the loss and the gradient at once and dropped, so at most one
chunk of logits is in memory, whatever the number of answer tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunelab.data.template import IGNORE_INDEX

# Logit elements per chunk of the fused head + cross-entropy (64 MB in fp32).
CHUNK_ELEMENTS = 1 << 24


def unwrap(model: Any) -> Any:
    """The transformers model under a peft or DDP wrapper."""
    m = model
    if hasattr(m, "module") and not hasattr(m, "get_decoder"):
        m = m.module  # DDP
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()  # peft
    return m


def _hidden_and_head(model: Any, inputs: dict):
    inner = unwrap(model)
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    head = inner.get_output_embeddings()
    if decoder is None or head is None:
        return None, None
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    return hidden, head


def _inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, extra: dict) -> dict:
    inputs = {"input_ids": input_ids, **extra}
    if attention_mask is not None:  # packed rows come without one (MicroBatch.model_inputs)
        inputs["attention_mask"] = attention_mask
    return inputs


def answer_hidden(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  labels: torch.Tensor, **extra: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The head, and the decoder's hidden states and targets where the next token is an answer token.

    ``extra`` holds packed-row arguments (``MicroBatch.model_inputs``). When the model has
    no separable head, the head returned is None and the "hidden states" are the
    logits at those positions.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    inputs = _inputs(input_ids, attention_mask, extra)
    hidden, head = _hidden_and_head(model, inputs)
    if hidden is None:  # a model without a separable head: full logits, then select
        logits = model(**inputs, use_cache=False).logits
        return None, logits[:, :-1][keep], targets[keep]
    return head, hidden[:, :-1][keep], targets[keep]


def answer_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  labels: torch.Tensor, **extra: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets at the positions whose next token is an answer token.

    Returns:
        (logits of shape (N, vocab), targets of shape (N,)), N = answer tokens.
    """
    head, hidden, targets = answer_hidden(model, input_ids, attention_mask, labels, **extra)
    return (hidden if head is None else head(hidden)), targets


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` against ``targets``, in row chunks.

    The gradients are computed in the forward pass, chunk by chunk, while each chunk's
    logits exist; the backward pass only scales them. Returns (loss sum, correct count).
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        n_rows = hidden.shape[0]
        # One logits buffer for every chunk: a fresh (chunk x vocab) tensor per chunk
        # would be mapped and page-faulted in anew each time.
        buf = torch.empty((min(chunk, n_rows), weight.shape[0]), dtype=torch.float32, device=hidden.device)
        rows = torch.arange(min(chunk, n_rows), device=hidden.device)
        for s in range(0, n_rows, chunk):
            h, t = hidden[s:s + chunk], targets[s:s + chunk]
            n = t.shape[0]
            logits = buf[:n]
            if hidden.dtype == torch.float32:
                torch.mm(h, weight.t(), out=logits)
            else:
                logits.copy_(h @ weight.t())
            top, best = logits.max(dim=-1)  # one pass: the max for the loss, argmax for accuracy
            picked = logits.gather(1, t[:, None]).squeeze(1)
            correct += (best == t).sum()
            # softmax runs row by row (each row stays in cache), in place of the logits.
            probs = torch.softmax(logits, dim=-1, out=logits)
            # log-sum-exp from the softmax: the max logit's probability is 1 / sum(exp(l - max)).
            lse = top - probs.gather(1, best[:, None]).squeeze(1).log()
            loss += (lse - picked).sum()
            if need_h or need_w:
                probs[rows[:n], t] -= 1.0  # d(loss)/d(logits)
                p = probs.to(hidden.dtype)
                if need_h:
                    assert grad_h is not None  # allocated above whenever need_h
                    torch.mm(p, weight, out=grad_h[s:s + n])
                if need_w:
                    assert grad_w is not None  # allocated above whenever need_w
                    grad_w.addmm_(p.t(), h)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w) if g is not None))
        ctx.has = (need_h, need_w)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_correct: Any):
        saved = iter(ctx.saved_tensors)
        need_h, need_w = ctx.has
        grad_h = grad_w = None
        if need_h:
            g = next(saved)
            grad_h = g * grad_loss.to(g.dtype)
        if need_w:
            g = next(saved)
            grad_w = g * grad_loss.to(g.dtype)
        return grad_h, grad_w, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor,
                         targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of cross-entropy of ``hidden @ weight.T`` (a bias-free head) and the correct count."""
    chunk = max(16, CHUNK_ELEMENTS // max(weight.shape[0], 1))
    loss, correct = _LinearCrossEntropy.apply(hidden, weight, targets, chunk)
    return loss, int(correct)


def _plain_head(head: Any) -> bool:
    return type(head) is torch.nn.Linear and head.bias is None


def step_loss_sum(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  labels: torch.Tensor, **extra: Any) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy over a micro-batch's answer tokens.

    Returns:
        (loss sum as a 0-d tensor with grad, answer tokens, correctly predicted tokens).
    """
    head, hidden, targets = answer_hidden(model, input_ids, attention_mask, labels, **extra)
    if targets.numel() == 0:
        return hidden.sum() * 0.0, 0, 0
    if head is not None and _plain_head(head):
        loss, correct = linear_cross_entropy(hidden, head.weight, targets)
        return loss, int(targets.numel()), correct
    logits = hidden if head is None else head(hidden)
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    correct = int((logits.detach().argmax(-1) == targets).sum())
    return loss, int(targets.numel()), correct


def batch_loss_sum(model: Any, mb: Any, device: Any = None) -> tuple[torch.Tensor, int, int]:
    """``step_loss_sum`` of a ``MicroBatch``, padded or packed."""
    inputs = mb.model_inputs(device)
    ids = inputs.pop("input_ids")
    mask = inputs.pop("attention_mask", None)
    labels = mb.labels if device is None else mb.labels.to(device)
    return step_loss_sum(model, ids, mask, labels, **inputs)
