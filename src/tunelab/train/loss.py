"""The causal-LM loss at answer tokens only, normalized per optimizer step.

The loss of a step is the sum of cross-entropy over every answer token of every
micro-batch of the step, divided by the number of those tokens. Each micro-batch
contributes ``sum / step_tokens``, so the step loss and the gradients do not depend on
how a step is split into micro-batches.

The LM head runs only at positions that carry a label: the full (tokens x vocabulary)
logits are never built, which saves most of the head's time and memory when answers
are short.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunelab.data.template import IGNORE_INDEX


def unwrap(model: Any) -> Any:
    """The transformers model under a peft or DDP wrapper."""
    m = model
    if hasattr(m, "module") and not hasattr(m, "get_decoder"):
        m = m.module  # DDP
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()  # peft
    return m


def _hidden_and_head(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    inner = unwrap(model)
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    head = inner.get_output_embeddings()
    if decoder is None or head is None:
        return None, None
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return hidden, head


def answer_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets at the positions whose next token is an answer token.

    Returns:
        (logits of shape (N, vocab), targets of shape (N,)), N = answer tokens.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    hidden, head = _hidden_and_head(model, input_ids, attention_mask)
    if hidden is None:  # a model without a separable head: full logits, then select
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return logits[:, :-1][keep], targets[keep]
    return head(hidden[:, :-1][keep]), targets[keep]


def step_loss_sum(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy over a micro-batch's answer tokens.

    Returns:
        (loss sum as a 0-d tensor with grad, answer tokens, correctly predicted tokens).
    """
    logits, targets = answer_logits(model, input_ids, attention_mask, labels)
    if targets.numel() == 0:
        return logits.sum() * 0.0, 0, 0
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    correct = int((logits.detach().argmax(-1) == targets).sum())
    return loss, int(targets.numel()), correct
