"""Continuous batching: requests join and leave a running batch at token-step boundaries.

A ``BatchScheduler`` keeps one left-padded key/value cache for every sequence that is
decoding. Each ``step()``:

1. frees the rows of cancelled sequences (a client that went away loses its slot here,
   within one step);
2. admits waiting requests, oldest first, while there are free rows and the step's
   prompt-token budget allows: the newcomers are prefilled together (left-padded, only
   the last position's logits kept), their first token is sampled, and their cache is
   merged into the running one (each group is padded on the left to the wider width);
3. decodes one token for every running row in a single forward pass, with per-row
   position ids, so a row's answer does not depend on who shares the batch;
4. retires finished rows (a stop id, ``max_new_tokens`` or the context length).

Rows may use different LoRA adapters of one PEFT model: a batch with one adapter runs
with it active; a mixed batch passes PEFT's ``adapter_names`` (``BASE_ADAPTER`` for the
plain weights), which applies each adapter to its own rows only. A request naming no
adapter gets the adapter that was active when the scheduler was made.

Why our own loop rather than transformers' ``ContinuousBatchingManager``: that manager
needs paged-attention kernels and a fixed set of generation settings per manager, and it
does not pass a per-request PEFT adapter; vLLM's scheduler needs CUDA. This loop uses the
model's ordinary forward (any attention implementation, CPU included) and keeps vLLM's
shape: a waiting queue, a running set, a per-step token budget, FIFO admission.

The cache layer (``_SlabLayer``) grows its buffers by doubling and writes each new
token in place; transformers' ``DynamicLayer`` concatenates the whole cache on every step,
which at 16 rows costs more than the step's matrix products on a CPU.

``ServingEngine`` runs a scheduler on its own thread for the server; ``BatchScheduler``
alone serves callers that wait for all their answers (``GenerationEngine``). Nothing
here knows about HTTP, text or chat templates: requests are token ids.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers.cache_utils import Cache, DynamicLayer

from tunelab.errors import TunelabError, UsageError
from tunelab.serve.linear import decoding, fast_decode_linears

log = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class SamplingParams:
    """How one request is answered.

    Args:
        max_new_tokens: most tokens made (the stop token not counted).
        temperature: 0 is greedy; above 0 samples from the softened distribution.
        top_p: nucleus mass in (0, 1] when sampling.
        seed: makes a sampled answer repeatable; None draws a fresh seed.
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if problems:
            raise UsageError("; ".join(problems),
                             hint="max_new_tokens starts at 1, temperature at 0 (greedy), "
                                  "top_p is in (0, 1]")


class QueueFullError(UsageError):
    """The waiting queue is full; try again after ``retry_after`` seconds."""

    def __init__(self, waiting: int, retry_after: float) -> None:
        super().__init__(f"the server is busy: {waiting} requests are already waiting",
                         hint=f"retry after {retry_after:.0f} s, or raise the queue size")
        self.retry_after = retry_after


class ContextLengthError(UsageError):
    """The prompt plus the tokens asked for do not fit the model's context."""

    def __init__(self, prompt_tokens: int, max_new_tokens: int, context_length: int) -> None:
        super().__init__(
            f"this model's context is {context_length} tokens, but {prompt_tokens + max_new_tokens} "
            f"were requested ({prompt_tokens} in the prompt, {max_new_tokens} for the answer)",
            hint="shorten the prompt or ask for fewer new tokens (max_tokens)")
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.context_length = context_length


class EngineClosedError(TunelabError):
    """The engine is draining or stopped and takes no new requests."""


@dataclass(frozen=True)
class EngineSettings:
    """Limits of one engine; the server builds these from its settings (``tunelab.config.serve``).

    Args:
        max_batch_size: sequences decoding together (rows of the running batch).
        max_queue: requests waiting for a row; one more raises ``QueueFullError``.
        prefill_tokens: prompt tokens prefilled in one step (a single longer prompt is
            still admitted alone), so a burst of arrivals cannot stall decoding for long.
    """

    max_batch_size: int
    max_queue: int
    prefill_tokens: int

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "prefill_tokens"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")


EventCallback = Callable[["Sequence", list[int], bool], None]


@dataclass(eq=False)
class Sequence:
    """One request inside the engine; ``submit`` returns it as the caller's handle."""

    id: int
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None
    on_event: EventCallback | None = None
    output_ids: list[int] = field(default_factory=list)  # the stop id is not kept
    finish_reason: str | None = None  # stop | length | cancelled | error
    error: str | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    stop_id: int | None = None  # the stop id that ended the answer, if one did
    _cancelled: bool = False
    _generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Ask the engine to drop this sequence; its row is freed at the next step."""
        self._cancelled = True

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class _SlabLayer(DynamicLayer):
    """A cache layer whose buffers grow by doubling; new tokens are written in place."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.length = 0
        self.k_buf = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[-1]))
        self.v_buf = value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[-1]))
        self.keys, self.values = self.k_buf, self.v_buf
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self.length + n > self.k_buf.shape[-2]:
            self._grow(self.length + n)
        self.k_buf[:, :, self.length:self.length + n] = key_states
        self.v_buf[:, :, self.length:self.length + n] = value_states
        self.length += n
        self.keys = self.k_buf[:, :, :self.length]
        self.values = self.v_buf[:, :, :self.length]
        return self.keys, self.values

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * self.k_buf.shape[-2], 64)
        for name in ("k_buf", "v_buf"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:2], cap, old.shape[-1]))
            new[:, :, :self.length] = old[:, :, :self.length]
            setattr(self, name, new)

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def set(self, keys: torch.Tensor, values: torch.Tensor, spare: int) -> None:
        """Replace the contents (batch, heads, width, dim), leaving room for ``spare`` more."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        width = keys.shape[-2]
        self.k_buf = keys.new_empty((*keys.shape[:2], width + spare, keys.shape[-1]))
        self.v_buf = values.new_empty((*values.shape[:2], width + spare, values.shape[-1]))
        self.k_buf[:, :, :width] = keys
        self.v_buf[:, :, :width] = values
        self.length = width
        self.keys = self.k_buf[:, :, :width]
        self.values = self.v_buf[:, :, :width]


def _new_cache() -> Cache:
    return Cache(layer_class_to_replicate=_SlabLayer)


class _Batch:
    """The running rows: their sequences, one shared cache, a padding mask, positions."""

    def __init__(self) -> None:
        self.seqs: list[Sequence] = []
        self.cache: Cache | None = None
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # (rows, cache width); 0 = padding
        self.lengths: list[int] = []  # real tokens of each row in the cache
        self.pending: list[int] = []  # each row's last sampled id, not yet in the cache

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows``; columns that became padding in every row are dropped."""
        if len(rows) == len(self.seqs):
            return
        self.seqs = [self.seqs[r] for r in rows]
        self.lengths = [self.lengths[r] for r in rows]
        self.pending = [self.pending[r] for r in rows]
        if not rows:
            self.cache, self.mask = None, torch.zeros((0, 0), dtype=torch.long)
            return
        index = torch.tensor(rows, dtype=torch.long)
        self.mask = self.mask[index]
        # Leading columns that are padding in every row. Read from the mask: a row prefilled
        # from a kept prompt beginning has padding after that beginning, not before it.
        real = self.mask.any(dim=0).nonzero()
        trim = int(real[0]) if len(real) else self.width
        self.mask = self.mask[:, trim:]
        assert self.cache is not None
        # room for the longest answer still to come, so no step has to grow the buffers
        spare = max(s.params.max_new_tokens - len(s.output_ids) for s in self.seqs) + 1
        for layer in self.cache.layers:
            assert isinstance(layer, _SlabLayer)
            layer.set(layer.keys[index, :, trim:], layer.values[index, :, trim:], spare=spare)

    def merge(self, seqs: list[Sequence], cache: Cache, mask: torch.Tensor, lengths: list[int],
              pending: list[int], spare: int) -> None:
        """Add prefilled rows; the narrower group is padded on the left."""
        if not self.seqs:
            self.seqs, self.cache, self.mask = list(seqs), cache, mask
            self.lengths, self.pending = list(lengths), list(pending)
            for layer in cache.layers:
                assert isinstance(layer, _SlabLayer)
                layer.set(layer.keys, layer.values, spare)
            return
        assert self.cache is not None
        width = max(self.width, mask.shape[1])
        old_pad, new_pad = width - self.width, width - mask.shape[1]
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            assert isinstance(mine, _SlabLayer) and isinstance(theirs, _SlabLayer)
            keys = torch.cat([_pad_left(mine.keys, old_pad), _pad_left(theirs.keys, new_pad)])
            values = torch.cat([_pad_left(mine.values, old_pad), _pad_left(theirs.values, new_pad)])
            mine.set(keys, values, spare)
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (old_pad, 0)),
                               torch.nn.functional.pad(mask, (new_pad, 0))])
        self.seqs += seqs
        self.lengths += lengths
        self.pending += pending


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    if n == 0:
        return t
    return torch.nn.functional.pad(t, (0, 0, n, 0))  # (batch, heads, width, dim): pad width


class PrefixCache:
    """Keys and values of prompt beginnings that requests share, computed once.

    Most prompts to one model begin alike: the chat template's default system turn
    (SmolLM2's is 24 tokens of a 100-token prompt), a task's system prompt and template.
    After each prefill, the longest beginning a prompt shares with one of the last
    ``RECENT`` prompts (same adapter, at least ``MIN_TOKENS``) is kept, cut from that row's
    cache: a key's values at a position depend only on the tokens up to it. A later prompt
    that starts with a kept beginning is prefilled from the end of it. At most
    ``CAPACITY`` beginnings are kept, the least recently used going first.
    """

    MIN_TOKENS = 16
    RECENT = 32
    CAPACITY = 16

    def __init__(self) -> None:
        self._kv: OrderedDict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._recent: deque[tuple[str | None, tuple[int, ...]]] = deque(maxlen=self.RECENT)
        self.hits = 0  # prompts prefilled from a kept beginning
        self.saved_tokens = 0  # prompt tokens those prompts did not recompute

    def __len__(self) -> int:
        return len(self._kv)

    def find(self, adapter: str | None, prompt: list[int]) -> tuple | None:
        """The key of the longest kept beginning of ``prompt`` (shorter than it), or None."""
        best: tuple | None = None
        for key in self._kv:
            a, ids = key
            if (a == adapter and len(ids) < len(prompt) and (best is None or len(ids) > len(best[1]))
                    and tuple(prompt[:len(ids)]) == ids):
                best = key
        return best

    def get(self, key: tuple) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        kv = self._kv.get(key)
        if kv is not None:
            self._kv.move_to_end(key)
        return kv

    def learn(self, seqs: list[Sequence], cache: Cache, mask: torch.Tensor) -> None:
        """Keep the beginnings these just-prefilled prompts share with recent ones."""
        if not cache.layers:
            return  # a model that keeps no cache
        for row, s in enumerate(seqs):
            prompt = tuple(s.prompt_ids)
            shared = max((len(os.path.commonprefix([prompt, other])) for a, other in self._recent
                          if a == s.adapter), default=0)
            self._recent.append((s.adapter, prompt))
            shared = min(shared, len(prompt) - 1)
            key = (s.adapter, prompt[:shared])
            if shared < self.MIN_TOKENS or key in self._kv:
                continue
            cols = mask[row].nonzero().squeeze(1)[:shared]  # the row's first real tokens
            self._kv[key] = [(layer.keys[row:row + 1, :, cols].clone(),
                              layer.values[row:row + 1, :, cols].clone())
                             for layer in cache.layers]
            while len(self._kv) > self.CAPACITY:
                self._kv.popitem(last=False)


class BatchScheduler:
    """Continuous batching over one model, driven by ``step()`` (no thread of its own).

    Args:
        model: a causal LM (Hugging Face or PEFT), in eval mode, on its device.
        stop_ids: ids that end an answer (end of turn, EOS).
        pad_id: any id in the vocabulary (padding is masked out).
        context_length: most tokens a sequence may hold (prompt plus answer).
        settings: batch, queue and prefill limits.
    """

    def __init__(self, model: Any, stop_ids: frozenset[int], pad_id: int, context_length: int,
                 settings: EngineSettings) -> None:
        self.model = model
        self.stop_ids = stop_ids
        self.pad_id = pad_id
        self.context_length = context_length
        self.settings = settings
        self.waiting: deque[Sequence] = deque()
        self.batch = _Batch()
        self.prefixes = PrefixCache()
        self.on_step: Callable[[int, int, float], None] | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards `waiting` against submitting threads
        self._is_peft = hasattr(model, "peft_config")
        # A request without an adapter gets the model as it was handed over: a PEFT
        # model's active adapter then (BASE_ADAPTER asks for the plain weights).
        self._default_adapter = model.active_adapter if self._is_peft else None
        self.device = next(model.parameters()).device
        fast_decode_linears(model)  # W @ x^T for the few rows of a step (serve.linear)

    # -- submitting ----------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
               on_event: EventCallback | None = None) -> Sequence:
        """Queue a request; thread-safe.

        Raises:
            UsageError: the prompt is empty, or ``adapter`` is not loaded.
            ContextLengthError: prompt plus ``max_new_tokens`` exceed the context.
            QueueFullError: ``max_queue`` requests are already waiting.
        """
        if not prompt_ids:
            raise UsageError("the prompt is empty; a prompt needs at least one token",
                             hint="send some text")
        if len(prompt_ids) + params.max_new_tokens > self.context_length:
            raise ContextLengthError(len(prompt_ids), params.max_new_tokens, self.context_length)
        if adapter not in (None, BASE_ADAPTER) and adapter not in getattr(self.model, "peft_config", {}):
            raise UsageError(f"adapter {adapter!r} is not loaded in this engine")
        seq = Sequence(next(self._ids), list(prompt_ids), params, adapter, on_event)
        if params.temperature > 0:
            seq._generator = torch.Generator(device="cpu")
            if params.seed is None:
                seq._generator.seed()
            else:
                seq._generator.manual_seed(params.seed)
        with self._lock:
            if len(self.waiting) >= self.settings.max_queue:
                raise QueueFullError(len(self.waiting), self._retry_after())
            self.waiting.append(seq)
        return seq

    def _retry_after(self) -> float:
        return float(max(1, len(self.waiting) // max(self.settings.max_batch_size, 1)))

    @property
    def running(self) -> int:
        return len(self.batch)

    def has_work(self) -> bool:
        return bool(self.waiting) or bool(self.batch.seqs)

    # -- one step --------------------------------------------------------------------

    @torch.inference_mode()
    @decoding()
    def step(self) -> bool:
        """Free cancelled rows, admit waiting requests, decode one token for every row.

        Returns:
            Whether there was anything to do.
        """
        self._drop_cancelled()
        admitted = self._admit()
        if admitted:
            self._prefill(admitted)
        if not self.batch.seqs:
            return bool(admitted)
        started = time.perf_counter()
        n = len(self.batch)
        self._decode()
        if self.on_step is not None:
            self.on_step(n, n, time.perf_counter() - started)
        return True

    def _drop_cancelled(self) -> None:
        with self._lock:
            gone = [s for s in self.waiting if s._cancelled]
            for s in gone:
                self.waiting.remove(s)
        for s in gone:
            self._finish(s, "cancelled")
        keep = []
        for row, s in enumerate(self.batch.seqs):
            if s._cancelled:
                self._finish(s, "cancelled")
            else:
                keep.append(row)
        self.batch.keep(keep)

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        budget = self.settings.prefill_tokens
        with self._lock:
            while self.waiting and len(self.batch) + len(admitted) < self.settings.max_batch_size:
                size = len(self.waiting[0].prompt_ids)
                if admitted and size > budget:
                    break
                admitted.append(self.waiting.popleft())
                budget -= size
        return admitted

    def _forward(self, seqs: list[Sequence], **inputs: Any) -> torch.Tensor:
        """Last-position logits (rows, vocab) with each row's adapter."""
        if not self._is_peft:
            return self.model(**inputs, logits_to_keep=1).logits[:, -1].float()
        names = {s.adapter or self._default_adapter for s in seqs}
        if names == {BASE_ADAPTER}:
            with self.model.disable_adapter():
                return self.model(**inputs, logits_to_keep=1).logits[:, -1].float()
        if len(names) == 1:
            (name,) = names
            if self.model.active_adapter != name:
                self.model.set_adapter(name)
            return self.model(**inputs, logits_to_keep=1).logits[:, -1].float()
        adapter_names = [s.adapter or self._default_adapter for s in seqs]
        return self.model(**inputs, adapter_names=adapter_names, logits_to_keep=1).logits[:, -1].float()

    def _prefill(self, seqs: list[Sequence]) -> None:
        """Prefill newcomers, in one group per cached prefix they start with (or none)."""
        groups: dict[tuple | None, list[Sequence]] = {}
        for s in seqs:
            groups.setdefault(self.prefixes.find(s.adapter, s.prompt_ids), []).append(s)
        for key, group in groups.items():
            self._prefill_group(group, key)

    def _prefill_group(self, seqs: list[Sequence], prefix: tuple | None) -> None:
        # Layout of a row: [cached prefix | left padding | the rest of its prompt]; the
        # mask hides the padding, positions count real tokens only.
        kv = self.prefixes.get(prefix) if prefix is not None else None
        p = len(prefix[1]) if prefix is not None and kv is not None else 0
        rests = [s.prompt_ids[p:] for s in seqs]
        width = max(len(r) for r in rests)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), p + width), dtype=torch.long)
        mask[:, :p] = 1
        for row, r in enumerate(rests):
            ids[row, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[row, p + width - len(r):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, p:]
        cache = _new_cache()
        if kv is not None:
            for keys, values in kv:
                layer = _SlabLayer()
                layer.set(keys.expand(len(seqs), -1, -1, -1), values.expand(len(seqs), -1, -1, -1),
                          spare=width)
                cache.layers.append(layer)
        try:
            logits = self._forward(seqs, input_ids=ids.to(self.device),
                                   attention_mask=mask.to(self.device),
                                   position_ids=positions.to(self.device), cache=cache,
                                   use_cache=True)
        except Exception as e:  # a bad request must not take the other rows down
            log.exception("prefill failed for %d sequences", len(seqs))
            for s in seqs:
                self._finish(s, "error", error=f"{type(e).__name__}: {e}")
            return
        if kv is not None:
            self.prefixes.hits += len(seqs)
            self.prefixes.saved_tokens += p * len(seqs)
        self.prefixes.learn(seqs, cache, mask)
        tokens = self._sample(seqs, logits)
        now = time.monotonic()
        live, live_rows, pending = [], [], []
        for row, (s, t) in enumerate(zip(seqs, tokens, strict=True)):
            s.first_token_at = now
            if self._accept(s, t):
                live.append(s)
                live_rows.append(row)
                pending.append(t)
        if not live:
            return
        if len(live_rows) < len(seqs):
            index = torch.tensor(live_rows, dtype=torch.long)
            for layer in cache.layers:
                assert isinstance(layer, _SlabLayer)
                layer.set(layer.keys[index], layer.values[index], 0)
            mask = mask[index]
        spare = max(s.params.max_new_tokens for s in live) + 1
        self.batch.merge(live, cache, mask, [len(s.prompt_ids) for s in live], pending, spare)

    def _decode(self) -> None:
        b = self.batch
        ids = torch.tensor(b.pending, dtype=torch.long).unsqueeze(1)
        positions = torch.tensor(b.lengths, dtype=torch.long).unsqueeze(1)
        b.mask = torch.cat([b.mask, torch.ones((len(b), 1), dtype=torch.long)], dim=1)
        try:
            logits = self._forward(b.seqs, input_ids=ids.to(self.device),
                                   attention_mask=b.mask.to(self.device),
                                   position_ids=positions.to(self.device), cache=b.cache,
                                   use_cache=True)
        except Exception as e:
            log.exception("decode step failed for %d sequences", len(b))
            for s in b.seqs:
                self._finish(s, "error", error=f"{type(e).__name__}: {e}")
            b.keep([])
            return
        b.lengths = [n + 1 for n in b.lengths]
        tokens = self._sample(b.seqs, logits)
        keep = []
        for row, (s, t) in enumerate(zip(b.seqs, tokens, strict=True)):
            if self._accept(s, t):
                keep.append(row)
                b.pending[row] = t
        b.keep(keep)

    def _accept(self, s: Sequence, token: int) -> bool:
        """Record a sampled token; False when the sequence has finished."""
        if s._cancelled:
            self._finish(s, "cancelled")
            return False
        if token in self.stop_ids:
            s.stop_id = token
            self._finish(s, "stop")
            return False
        s.output_ids.append(token)
        full = len(s.prompt_ids) + len(s.output_ids) >= self.context_length
        if len(s.output_ids) >= s.params.max_new_tokens or full:
            self._finish(s, "length", new=[token])
            return False
        self._emit(s, [token], False)
        return True

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        out = logits.argmax(dim=-1).tolist()
        for row, s in enumerate(seqs):
            p = s.params
            if p.temperature > 0:
                probs = torch.softmax(logits[row] / p.temperature, dim=-1)
                if p.top_p < 1:
                    sorted_p, order = probs.sort(descending=True)
                    drop = sorted_p.cumsum(-1) - sorted_p > p.top_p  # keep the head reaching top_p
                    sorted_p[drop] = 0
                    probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
                out[row] = int(torch.multinomial(probs.cpu(), 1, generator=s._generator))
        return out

    def _finish(self, s: Sequence, reason: str, new: list[int] | None = None,
                error: str | None = None) -> None:
        s.finish_reason = reason
        s.error = error
        s.finished_at = time.monotonic()
        self._emit(s, new or [], True)

    def _emit(self, s: Sequence, new: list[int], finished: bool) -> None:
        if s.on_event is None:
            return
        try:
            s.on_event(s, new, finished)
        except Exception:  # a listener's bug must not stop the engine
            log.exception("event listener failed for sequence %d; cancelling it", s.id)
            s._cancelled = True

    def abort_all(self, reason: str = "cancelled") -> None:
        """Finish every waiting and running sequence now (used when closing)."""
        with self._lock:
            waiting = list(self.waiting)
            self.waiting.clear()
        for s in [*waiting, *self.batch.seqs]:
            if not s.done:
                self._finish(s, reason)
        self.batch.keep([])


class Scheduler(Protocol):
    """What ``ServingEngine`` drives: ``BatchScheduler``'s interface, stepped on one thread
    while other threads submit."""

    settings: EngineSettings
    context_length: int
    on_step: Callable[[int, int, float], None] | None
    waiting: deque[Sequence]

    @property
    def running(self) -> int: ...

    def submit(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
               on_event: EventCallback | None = None) -> Sequence: ...

    def step(self) -> bool: ...

    def has_work(self) -> bool: ...

    def abort_all(self, reason: str = "cancelled") -> None: ...


class ServingEngine:
    """A scheduler (``BatchScheduler`` or another) for a server with many callers: thread-safe submits, a drain.

    The steps run either on a thread of the engine's own (``start``) or on the caller's
    thread through ``run_engines``. A server should use the latter from its main thread:
    on this project's CPU, torch's OpenMP workers spin between the parallel regions of
    the thread that started them, and a 16-row decode step measured 111 ms on the main
    thread against 191 ms on another (OMP_WAIT_POLICY=ACTIVE; 2 cores).

    Args:
        scheduler: what decodes: a ``BatchScheduler`` (transformers), or another object
            with its interface (``Scheduler``; llama.cpp's in ``serve.llamacpp_engine``).
        wake: a condition shared by the engines that one thread drives together (None:
            the engine's own).
    """

    def __init__(self, scheduler: Scheduler, wake: threading.Condition | None = None) -> None:
        self.scheduler = scheduler
        self.settings = scheduler.settings
        self.context_length = scheduler.context_length
        self.wake = wake or threading.Condition()
        self._accepting = True
        self._stopping = False
        self.closed = False
        self._thread: threading.Thread | None = None

    @property
    def on_step(self) -> Callable[[int, int, float], None] | None:
        return self.scheduler.on_step

    @on_step.setter
    def on_step(self, fn: Callable[[int, int, float], None] | None) -> None:
        self.scheduler.on_step = fn

    @property
    def waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def running(self) -> int:
        return self.scheduler.running

    def start(self) -> None:
        """Run the steps on a thread of the engine's own (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=run_engines, args=([self],),
                                            name="tunelab-engine", daemon=True)
            self._thread.start()

    def submit(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
               on_event: EventCallback | None = None) -> Sequence:
        """Queue a request (thread-safe); raises as ``BatchScheduler.submit``, or
        ``EngineClosedError`` while draining."""
        if not self._accepting:
            raise EngineClosedError("the server is shutting down and takes no new requests",
                                    hint="send the request to another replica, or retry later")
        seq = self.scheduler.submit(prompt_ids, params, adapter, on_event)
        with self.wake:
            self.wake.notify_all()
        return seq

    def service(self) -> bool:
        """One step if there is work (or the close, once asked); whether anything was done."""
        if self._stopping:
            if not self.closed:
                self.scheduler.abort_all("cancelled")
                self.closed = True
                return True
            return False
        if not self.scheduler.has_work():
            return False
        try:
            self.scheduler.step()
        except Exception:  # keep serving: the failing rows were finished with "error"
            log.exception("engine step failed")
            self.scheduler.abort_all("error")
        return True

    def drain(self, timeout: float) -> bool:
        """Stop taking requests and wait up to ``timeout`` s for those in flight (the steps
        run elsewhere: the engine's thread or ``run_engines``).

        Returns:
            True when every request finished in time.
        """
        self._accepting = False
        deadline = time.monotonic() + timeout
        while self.scheduler.has_work() and not self.closed and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.scheduler.has_work()

    def close(self) -> None:
        """Stop: whatever is still waiting or running is cancelled at the next service."""
        self._accepting = False
        with self.wake:
            self._stopping = True
            self.wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)


def run_engines(engines: list[ServingEngine], until: Callable[[], bool] = lambda: False,
                poll: float = 0.05) -> None:
    """Drive ``engines`` on the calling thread, in turn, until ``until()`` or all are closed.

    Args:
        engines: engines sharing one ``wake`` condition (or a single engine).
        until: checked at least every ``poll`` seconds while idle, and between steps.
        poll: seconds an idle loop sleeps at most before checking ``until`` again.
    """
    wake = engines[0].wake
    assert all(e.wake is wake for e in engines), "engines driven together share a condition"
    while not until() and not all(e.closed for e in engines):
        worked = False
        for e in engines:
            worked = e.service() or worked
        if not worked:
            with wake:
                idle = not any(e.scheduler.has_work() or (e._stopping and not e.closed)
                               for e in engines)
                if idle:
                    wake.wait(timeout=poll)
