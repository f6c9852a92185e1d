"""Continuous batching on llama.cpp: the scheduler the server uses for a GGUF file.

``LlamaCppScheduler`` has the interface of ``tunelab.serve.batching.BatchScheduler``
(``submit``, ``step``, ``has_work``, ``abort_all``, ``waiting``, ``running``,
``on_step``), so ``ServingEngine``, the HTTP app, streaming, metrics, the request log,
experiments and feedback work on it unchanged. It decodes on a ``Decoder``
(``tunelab.models.llamacpp``): one llama.cpp context holding up to ``max_batch_size``
sequences, each in a slot (llama.cpp's sequence id) of one shared key/value pool. Each
``step()``:

1. frees the slots of cancelled sequences (their cache cells too);
2. admits waiting requests, oldest first, while a slot is free, the step's prompt-token
   budget allows, and the pool has room for the prompt plus every token the request may
   still ask for (the cells promised to running sequences are counted, so a decode never
   runs out of room); a request that does not fit waits for one that finishes;
3. prefills the newcomers' prompts and samples their first token. A prompt that begins
   like a running sequence's prompt (at least ``MIN_SHARED`` tokens: a chat template's
   system turn, a task's instructions) takes those cells from it (``Decoder.share``) and
   prefills only the rest; newcomers that begin alike and have no such sequence are
   prefilled in two batches, the first of them before the others;
4. decodes one token for every running sequence in one llama.cpp batch (each at its own
   position, in its own sequence: llama.cpp masks the others out);
5. retires finished sequences (a stop id, ``max_new_tokens`` or the context length).

Sampling is ``pick_token`` (numpy), with a per-request generator, as the transformers
engine samples; greedy is the argmax. What it does not do: LoRA adapters (a GGUF is
served with its merged weights; naming an adapter is refused), and the transformers
engine's cache of prompt beginnings that outlive their sequence (here a beginning is
shared only while a sequence holding it runs). Nothing here knows about HTTP, text or
chat templates: requests are token ids.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tunelab.errors import UsageError
from tunelab.models.llamacpp import LlamaCppModel, Token, pick_token
from tunelab.serve.batching import (
    BASE_ADAPTER,
    ContextLengthError,
    EngineSettings,
    EventCallback,
    QueueFullError,
    SamplingParams,
    Sequence,
)

log = logging.getLogger(__name__)

MIN_SHARED = 16  # tokens: a shorter common beginning is prefilled again (not worth a copy)


@dataclass(eq=False)
class _Row:
    """A running sequence: its slot, tokens in the cache, last token not yet decoded."""

    seq: Sequence
    slot: int
    length: int
    pending: int
    rng: np.random.Generator | None

    @property
    def promised(self) -> int:
        """Cells this sequence may still fill: its prompt and its whole answer."""
        return len(self.seq.prompt_ids) + self.seq.params.max_new_tokens


class LlamaCppScheduler:
    """Continuous batching over a GGUF loaded by llama.cpp, driven by ``step()``.

    Args:
        model: the loaded GGUF.
        stop_ids: ids that end an answer (end of turn, EOS).
        context_length: most tokens one sequence may hold (prompt plus answer).
        settings: batch, queue and prefill limits.
        cells: key/value slots shared by all running sequences; None: ``context_length``
            (room for one full-length request, or many short ones).
    """

    def __init__(self, model: LlamaCppModel, stop_ids: frozenset[int], context_length: int,
                 settings: EngineSettings, cells: int | None = None) -> None:
        self.model = model
        self.stop_ids = stop_ids
        self.context_length = context_length
        self.settings = settings
        self.decoder = model.decoder(settings.max_batch_size, cells or context_length)
        self.waiting: deque[Sequence] = deque()
        self.rows: list[_Row] = []
        self.on_step: Callable[[int, int, float], None] | None = None
        self._free = list(range(settings.max_batch_size))
        self.shared_tokens = 0  # prompt tokens not prefilled, taken from another sequence
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards `waiting` against submitting threads

    # -- submitting ----------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
               on_event: EventCallback | None = None) -> Sequence:
        """Queue a request; thread-safe.

        Raises:
            UsageError: the prompt is empty, or an adapter is named.
            ContextLengthError: prompt plus ``max_new_tokens`` exceed the context.
            QueueFullError: ``max_queue`` requests are already waiting.
        """
        if not prompt_ids:
            raise UsageError("the prompt is empty; a prompt needs at least one token",
                             hint="send some text")
        if len(prompt_ids) + params.max_new_tokens > self.context_length:
            raise ContextLengthError(len(prompt_ids), params.max_new_tokens, self.context_length)
        if adapter not in (None, BASE_ADAPTER):
            raise UsageError(f"adapter {adapter!r}: a GGUF served by llama.cpp has no adapters",
                             hint="export the run merged (`tunelab export RUN --gguf OUT.gguf`)")
        seq = Sequence(next(self._ids), list(prompt_ids), params, None, on_event)
        with self._lock:
            if len(self.waiting) >= self.settings.max_queue:
                raise QueueFullError(len(self.waiting), self._retry_after())
            self.waiting.append(seq)
        return seq

    def _retry_after(self) -> float:
        return float(max(1, len(self.waiting) // max(self.settings.max_batch_size, 1)))

    @property
    def running(self) -> int:
        return len(self.rows)

    def has_work(self) -> bool:
        return bool(self.waiting) or bool(self.rows)

    # -- one step --------------------------------------------------------------------

    def step(self) -> bool:
        """Free cancelled slots, admit waiting requests, decode one token for every row.

        Returns:
            Whether there was anything to do.
        """
        self._drop_cancelled()
        admitted = self._admit()
        if admitted:
            self._prefill(admitted)
        if not self.rows:
            return bool(admitted)
        started = time.perf_counter()
        n = len(self.rows)
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
        for row in [r for r in self.rows if r.seq._cancelled]:
            self._retire(row)
            self._finish(row.seq, "cancelled")

    def _admit(self) -> list[_Row]:
        admitted: list[_Row] = []
        budget = self.settings.prefill_tokens
        promised = sum(r.promised for r in self.rows)
        with self._lock:
            while self.waiting and self._free:
                s = self.waiting[0]
                size = len(s.prompt_ids)
                if admitted and size > budget:
                    break
                need = size + s.params.max_new_tokens
                if promised + need > self.decoder.cells and (self.rows or admitted):
                    break  # wait for a running sequence to give its cells back
                self.waiting.popleft()
                rng = np.random.default_rng(s.params.seed) if s.params.temperature > 0 else None
                admitted.append(_Row(s, self._free.pop(0), 0, -1, rng))
                budget -= size
                promised += need
        return admitted

    def _prefill(self, rows: list[_Row]) -> None:
        """Prefill the newcomers: from a running sequence's cells where a prompt begins like
        it, else from the first newcomer that begins alike (a second batch), else whole."""
        first: list[tuple[_Row, _Row | None, int]] = []
        second: list[tuple[_Row, _Row | None, int]] = []
        leaders: list[_Row] = []
        for r in rows:
            src, n = _best_source(r, self.rows)
            if src is not None:
                first.append((r, src, n))
                continue
            src, n = _best_source(r, leaders)
            if src is not None:
                second.append((r, src, n))
            else:
                leaders.append(r)
                first.append((r, None, 0))
        for group in (first, second):
            if group:
                self._prefill_group(group)

    def _prefill_group(self, group: list[tuple[_Row, _Row | None, int]]) -> None:
        tokens: list[Token] = []
        for r, src, n in group:
            if src is not None and src.seq.finish_reason is None:
                self.decoder.share(src.slot, r.slot, n)
                self.shared_tokens += n
            else:
                n = 0  # its leader ended (or failed) at its first token: its cells are gone
            prompt = r.seq.prompt_ids
            tokens += [Token(prompt[i], i, r.slot, i == len(prompt) - 1) for i in range(n, len(prompt))]
        try:
            logits = self.decoder.decode(tokens)
        except Exception as e:  # a bad request must not take the other rows down
            log.exception("prefill failed for %d sequences", len(group))
            for r, _, _ in group:
                self._retire(r)
                self._finish(r.seq, "error", error=f"{type(e).__name__}: {e}")
            return
        now = time.monotonic()
        for (r, _, _), row_logits in zip(group, logits, strict=True):
            r.length = len(r.seq.prompt_ids)
            r.seq.first_token_at = now
            self.rows.append(r)
            self._take(r, row_logits)

    def _decode(self) -> None:
        rows = list(self.rows)
        try:
            logits = self.decoder.decode([Token(r.pending, r.length, r.slot, True) for r in rows])
        except Exception as e:
            log.exception("decode step failed for %d sequences", len(rows))
            for r in rows:
                self._retire(r)
                self._finish(r.seq, "error", error=f"{type(e).__name__}: {e}")
            return
        for r, row_logits in zip(rows, logits, strict=True):
            r.length += 1
            self._take(r, row_logits)

    def _take(self, r: _Row, logits: np.ndarray) -> None:
        """Sample the row's next token; retire the row when it has finished."""
        p = r.seq.params
        token = pick_token(logits, p.temperature, p.top_p, r.rng)
        if not self._accept(r.seq, token):
            self._retire(r)
        else:
            r.pending = token

    def _retire(self, r: _Row) -> None:
        if r in self.rows:
            self.rows.remove(r)
        self.decoder.forget(r.slot)
        self._free.append(r.slot)

    def _accept(self, s: Sequence, token: int) -> bool:
        """Record a sampled token; False when the sequence has finished (as
        ``BatchScheduler._accept``)."""
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
        rows = list(self.rows)
        for r in rows:
            self._retire(r)
        for s in [*waiting, *(r.seq for r in rows)]:
            if not s.done:
                self._finish(s, reason)


def _best_source(r: _Row, candidates: list[_Row]) -> tuple[_Row | None, int]:
    """The candidate whose prompt shares the longest beginning with ``r``'s (at least
    ``MIN_SHARED`` tokens, and at least one token of ``r``'s prompt left to prefill)."""
    prompt = r.seq.prompt_ids
    best, most = None, 0
    for c in candidates:
        other = c.seq.prompt_ids
        n = 0
        limit = min(len(prompt) - 1, len(other))
        while n < limit and prompt[n] == other[n]:
            n += 1
        if n >= MIN_SHARED and n > most:
            best, most = c, n
    return best, most
