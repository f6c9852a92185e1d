"""Does an exported GGUF answer like the model it came from? Greedy tokens, compared.

The reference is the merged model in memory. For each prompt (token ids, rendered once
with the run's template) both sides decode greedily; an answer counts as identical only
when every token matches, up to and including the stop token. The mean per-token
log-probability difference is taken teacher-forced on the reference's own answer, so it
is measured on the same tokens for both sides even after the answers diverge.

A candidate is anything with ``greedy(prompt_ids, max_new_tokens, stop_ids)`` and
``token_logprobs(prompt_ids, continuation_ids)``: ``HfGreedy`` wraps a transformers
model (the file read back by transformers' GGUF reader, or the reference itself), and
``tunelab.models.llamacpp`` offers the same two methods for llama.cpp. This module does
not load or write models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

# The share of prompts whose greedy answers must be identical, by weight type: f32 is
# the same arithmetic up to summation order, so every answer; f16 and q8_0 round weights.
REQUIRED_IDENTICAL = {"f32": 1.0, "f16": 0.9, "q8_0": 0.9}


class Greedy(Protocol):
    def greedy(self, prompt_ids: list[int], max_new_tokens: int,
               stop_ids: frozenset[int]) -> list[int]: ...

    def token_logprobs(self, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]: ...


@dataclass
class HfGreedy:
    """Greedy decoding and teacher-forced log-probs with a transformers causal LM."""

    model: Any

    @torch.no_grad()
    def greedy(self, prompt_ids: list[int], max_new_tokens: int,
               stop_ids: frozenset[int]) -> list[int]:
        from transformers import DynamicCache

        self.model.eval()
        cache = DynamicCache()  # filled in place by each forward
        logits = self.model(input_ids=torch.tensor([prompt_ids]), cache=cache, use_cache=True).logits
        new: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(logits[0, -1].argmax())
            new.append(nxt)
            if nxt in stop_ids:
                break
            logits = self.model(input_ids=torch.tensor([[nxt]]), cache=cache, use_cache=True).logits
        return new

    @torch.no_grad()
    def token_logprobs(self, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]:
        if not continuation_ids:
            return []
        ids = torch.tensor([list(prompt_ids) + list(continuation_ids)])
        logits = self.model(input_ids=ids).logits[0].float()
        start = len(prompt_ids) - 1  # the logits at position i predict token i + 1
        logp = torch.log_softmax(logits[start:start + len(continuation_ids)], dim=-1)
        return logp.gather(1, torch.tensor(continuation_ids)[:, None])[:, 0].tolist()


@dataclass
class ReferenceAnswers:
    """The reference model's greedy answers and their log-probs, computed once."""

    prompts: list[list[int]]
    answers: list[list[int]]
    logprobs: list[list[float]]
    max_new_tokens: int
    stop_ids: frozenset[int]


def reference_answers(model: Greedy, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                      stop_ids: frozenset[int]) -> ReferenceAnswers:
    """Greedy answers of ``model`` to each prompt, with each answer token's log-prob."""
    ps = [list(p) for p in prompts]
    answers = [model.greedy(p, max_new_tokens, stop_ids) for p in ps]
    logprobs = [model.token_logprobs(p, a) for p, a in zip(ps, answers, strict=True)]
    return ReferenceAnswers(ps, answers, logprobs, max_new_tokens, stop_ids)


@dataclass
class ParityReport:
    """How one reader of the file agreed with the reference."""

    reader: str  # "transformers" or "llama.cpp"
    ftype: str
    prompts: int
    identical: int
    required: float  # the share of identical answers needed
    mean_logprob_diff: float  # mean |log p_file - log p_ref| per reference answer token
    max_logprob_diff: float
    first_difference: list[int | None] = field(default_factory=list)  # per prompt; None: same

    @property
    def share(self) -> float:
        return self.identical / self.prompts if self.prompts else 0.0

    @property
    def passed(self) -> bool:
        return self.prompts > 0 and self.share >= self.required - 1e-12

    def summary(self) -> str:
        return (f"{self.reader}: {self.identical}/{self.prompts} greedy answers identical "
                f"({self.share:.0%}; needs {self.required:.0%} for {self.ftype}); mean "
                f"|log-prob difference| {self.mean_logprob_diff:.2e} per token "
                f"(max {self.max_logprob_diff:.2e})")

    def as_dict(self) -> dict:
        return {**asdict(self), "share": self.share, "passed": self.passed}


def compare(reference: ReferenceAnswers, candidate: Greedy, reader: str, ftype: str) -> ParityReport:
    """Decode every reference prompt with ``candidate`` and compare token for token."""
    identical, firsts, diffs = 0, [], []
    for p, ref, ref_lp in zip(reference.prompts, reference.answers, reference.logprobs, strict=True):
        got = candidate.greedy(p, reference.max_new_tokens, reference.stop_ids)
        first = next((i for i, (a, b) in enumerate(zip(ref, got, strict=False)) if a != b), None)
        if first is None and len(ref) != len(got):
            first = min(len(ref), len(got))
        identical += first is None
        firsts.append(first)
        lp = candidate.token_logprobs(p, ref)
        diffs += [abs(a - b) for a, b in zip(lp, ref_lp, strict=True)]
    return ParityReport(reader, ftype, len(reference.prompts), identical, REQUIRED_IDENTICAL[ftype],
                        sum(diffs) / len(diffs) if diffs else 0.0, max(diffs, default=0.0), firsts)
