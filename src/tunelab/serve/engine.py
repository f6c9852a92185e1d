"""Batched text generation for chats and for already-tokenized prompts.

The engine renders chats with ``tunelab.data.template.render_prompt_ids``, the same
function training uses, so a model is served exactly the prompt it was trained on.
Prompts are sorted by length (longest first) and answered by continuous batching
(``tunelab.serve.batching``, the server's scheduler): a finished answer's row is given to
the next prompt at once instead of waiting for the whole batch. Answers come back in the
caller's order. Generation stops at EOS and at the tokenizer's end-of-turn tokens.

The engine knows nothing about HTTP, request schemas or streaming; ``tunelab.serve.app``
builds on it. It receives a loaded model and tokenizer and never loads either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from tunelab.data.example import Message
from tunelab.data.template import (
    end_of_turn_ids,
    render_prompt_ids,
    resolve_chat_template,
    resolve_tool_format,
)
from tunelab.errors import UsageError
from tunelab.serve.batching import BatchScheduler, EngineSettings, SamplingParams
from tunelab.serve.batching import Sequence as Request
from tunelab.tracking.reporter import Progress


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate, checked once when made.

    Args:
        max_new_tokens: most tokens generated per answer.
        batch_size: prompts per forward pass.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (> 0); ignored when greedy.
        top_p: nucleus sampling mass in (0, 1]; ignored when greedy.
        seed: makes sampling repeatable (for the same batches); None leaves the
            global RNG as it is.

    Raises:
        UsageError: a setting is out of range (every such setting is named; also a
            ``ValueError``).
    """

    max_new_tokens: int = 128
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.do_sample and not self.temperature > 0:
            problems.append(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.do_sample and not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if problems:
            raise UsageError("; ".join(problems),
                             hint="max_new_tokens and batch_size start at 1; sampling needs "
                                  "temperature > 0 and top_p in (0, 1]")


def _settings(settings: GenerationSettings | None, overrides: dict[str, Any]) -> GenerationSettings:
    """``settings`` (or the defaults) with keyword overrides; an unknown name is a TypeError."""
    if not overrides:
        return settings or GenerationSettings()
    return replace(settings or GenerationSettings(), **overrides)  # checked again, as new


class GenerationEngine:
    """Generate answers for many chats at once with one model.

    Args:
        model: a causal LM (a Hugging Face or PEFT model), already on its device.
        tokenizer: its tokenizer.
        chat_template: as for ``tunelab.data.template.resolve_chat_template``; None uses
            the tokenizer's own.
        tool_format: how tools are rendered (a run's stored ``template`` or ``fallback``);
            None: as ``resolve_tool_format`` picks for the template.

    Raises:
        DataError: no template is given and the tokenizer has none.
    """

    def __init__(self, model: Any, tokenizer: Any, chat_template: str | None = None,
                 tool_format: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = resolve_chat_template(tokenizer, chat_template)
        self.tool_format = resolve_tool_format(tokenizer, self.chat_template, tool_format)
        self.stop_ids = self._setup_stop_ids()
        self.pad_token_id = self._setup_pad_id()

    def _setup_stop_ids(self) -> frozenset[int]:
        ids = set(end_of_turn_ids(self.tokenizer))
        model_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(model_eos, int):
            ids.add(model_eos)
        elif model_eos:
            ids.update(int(i) for i in model_eos)
        return frozenset(ids)

    def _setup_pad_id(self) -> int:
        # Many chat models (SmolLM2 among them) have no pad token or pad == EOS; left
        # padding is masked out, so any id works, and EOS is always in the vocabulary.
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        if self.tokenizer.eos_token_id is not None:
            return int(self.tokenizer.eos_token_id)
        return min(self.stop_ids) if self.stop_ids else 0

    def render(self, conversation: Sequence[Message | dict], tools: Sequence[dict] = ()) -> list[int]:
        """Prompt ids of one chat, with the assistant generation prompt appended.

        Args:
            tools: the functions the model may call (``Example.tools``).
        """
        return render_prompt_ids(self.tokenizer, conversation, self.chat_template, tools,
                                 self.tool_format)

    def generate(
        self,
        conversations: Sequence[Sequence[Message | dict]],
        settings: GenerationSettings | None = None,
        progress: Callable[..., Progress] | None = None,
        tools: Sequence[Sequence[dict]] | None = None,
        **overrides: Any,
    ) -> list[str]:
        """Answer each chat; one string per chat, in the order given.

        Args:
            conversations: chats whose last turn is the one to answer (usually a user turn).
            tools: per chat, the functions it may call; None: none for any.
            settings: how to generate; ``GenerationSettings()`` when omitted.
            progress: makes a progress bar over prompts (``Reporter.bar``); None: none.
            **overrides: any ``GenerationSettings`` field by name (``max_new_tokens=64``),
                applied on top of ``settings``.

        Returns:
            The new text of each answer, special tokens removed, stripped.

        Raises:
            UsageError: a generation setting is out of range (also a ``ValueError``).
            TypeError: an override names no setting.
        """
        settings = _settings(settings, overrides)
        per_chat = tools if tools is not None else [()] * len(conversations)
        prompts = [self.render(c, t) for c, t in zip(conversations, per_chat, strict=True)]
        outputs = self.complete_ids(prompts, settings, progress)
        texts = []
        for ids in outputs:
            if ids and ids[-1] in self.stop_ids:
                ids = ids[:-1]  # not every end-of-turn token is marked special
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        return texts

    def complete_ids(
        self,
        prompt_ids: Sequence[Sequence[int]],
        settings: GenerationSettings | None = None,
        progress: Callable[..., Progress] | None = None,
        **overrides: Any,
    ) -> list[list[int]]:
        """Continue already-tokenized prompts; the arguments are those of ``generate``.

        Returns:
            The new ids of each prompt, in the order given, cut after the first stop id.
            The stop id is kept, so ``ids[-1] in engine.stop_ids`` tells a finished
            answer from one cut at ``max_new_tokens``.

        Raises:
            UsageError: a prompt is empty or a generation setting is out of range (also a
                ``ValueError``).
            TypeError: an override names no setting.
        """
        s = _settings(settings, overrides)
        for i, p in enumerate(prompt_ids):
            if len(p) == 0:
                raise UsageError(f"prompt {i} is empty; a prompt needs at least one token",
                                 hint="give every prompt some text")
        # Longest first: rows that decode together have similar lengths (less padding), and
        # a batch that runs out of memory does so at the start rather than after minutes.
        order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
        longest = max((len(p) for p in prompt_ids), default=0)
        scheduler = BatchScheduler(
            self.model, self.stop_ids, self.pad_token_id,
            # No context check here: callers (eval, generate) asked for these lengths and
            # got them before continuous batching; the server checks its limit itself.
            context_length=longest + s.max_new_tokens,
            settings=EngineSettings(max_batch_size=s.batch_size, max_queue=max(len(order), 1),
                                    prefill_tokens=max(longest, 1) * s.batch_size))
        results: list[list[int]] = [[] for _ in prompt_ids]
        bar = progress(total=len(order), desc="generating", unit="prompt") if progress else None
        params = [SamplingParams(max_new_tokens=s.max_new_tokens,
                                 temperature=s.temperature if s.do_sample else 0.0,
                                 top_p=s.top_p if s.do_sample else 1.0,
                                 seed=None if s.seed is None else s.seed + rank)
                  for rank in range(len(order))]

        def done(seq: Request, new: list[int], finished: bool) -> None:
            if finished and bar is not None:
                bar.update(1)

        was_training = getattr(self.model, "training", False)
        self.model.eval()
        try:
            seqs = [scheduler.submit(list(prompt_ids[i]), params[rank], on_event=done)
                    for rank, i in enumerate(order)]
            while scheduler.has_work():
                scheduler.step()
            for i, seq in zip(order, seqs, strict=True):
                if seq.finish_reason == "error":
                    raise RuntimeError(f"generation failed: {seq.error}")
                results[i] = seq.output_ids + ([seq.stop_id] if seq.stop_id is not None else [])
        finally:
            if bar is not None:
                bar.close()
            self.model.train(was_training)  # the caller may be between training steps
        return results

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device
