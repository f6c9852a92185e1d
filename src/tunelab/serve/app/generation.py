"""One request inside the engine, seen from the event loop: events in, text pieces out.

``Generation`` submits a prompt to the model's ``ServingEngine`` and bridges the
engine's ``on_event`` callback (called on the engine's thread after each step) to an
``asyncio.Queue`` with ``loop.call_soon_threadsafe``: the engine thread does nothing
more than schedule a put. The reader turns ids into text pieces (``AnswerText``: whole
decode, new suffix, stop sequences), and a stop sequence found cancels the sequence so
its slot frees at the next step.

A client that goes away is noticed by a watcher task polling ``is_gone`` (Starlette's
``Request.is_disconnected``) every ``POLL_SECONDS``, also while tokens keep arriving,
and cancels the sequence: its slot frees within one engine step after that. Engine
events reach the loop through one wake-up per engine step (``_Bridge``), not one per
sequence: on a 2-core machine every cycle the HTTP thread spends is taken from torch.
This module knows nothing of HTTP routes or response shapes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from tunelab.serve.app.text import AnswerText
from tunelab.serve.batching import SamplingParams
from tunelab.serve.batching import Sequence as EngineSequence
from tunelab.serve.registry import ServedModel

POLL_SECONDS = 0.1  # how often a waiting request checks that its client is still there

IsGone = Callable[[], Awaitable[bool]]
_GONE: tuple[list[int], bool] = ([], True)  # put by the watcher when the client left


class ClientGone(Exception):
    """The client closed the connection before the answer was complete."""


class _Bridge:
    """Hands engine events to the event loop with one wake-up per engine step.

    The engine calls listeners once per sequence per step (16 calls for a 16-row step);
    each ``call_soon_threadsafe`` writes to the loop's wake-up pipe and schedules a
    callback. Here the first event of a batch schedules one delivery and the rest only
    join the list, so the loop wakes once and the engine thread does a list append.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[asyncio.Queue, tuple[list[int], bool]]] = []
        self.lock = threading.Lock()

    def put(self, queue: asyncio.Queue, item: tuple[list[int], bool]) -> None:
        with self.lock:
            self.pending.append((queue, item))
            first = len(self.pending) == 1
        if first:
            try:
                self.loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: the server is gone, nobody reads
                pass

    def _deliver(self) -> None:
        with self.lock:
            items, self.pending = self.pending, []
        for queue, item in items:
            queue.put_nowait(item)


_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bridge] = weakref.WeakKeyDictionary()


def _bridge(loop: asyncio.AbstractEventLoop) -> _Bridge:
    b = _bridges.get(loop)
    if b is None:
        b = _bridges[loop] = _Bridge(loop)
    return b


class Generation:
    """A submitted request: its engine sequence and the text of its answer.

    Args:
        model: the served model (its engine, adapter and tokenizer).
        prompt_ids: the rendered prompt.
        params: how to sample.
        stops: stop sequences, matched on the decoded text.

    Raises:
        QueueFullError, ContextLengthError, EngineClosedError: from ``ServingEngine.submit``.
    """

    def __init__(self, model: ServedModel, prompt_ids: list[int], params: SamplingParams,
                 stops: Sequence[str] = ()) -> None:
        self.bridge = _bridge(asyncio.get_running_loop())
        self.queue: asyncio.Queue[tuple[list[int], bool]] = asyncio.Queue()
        self.text = AnswerText(model.decode, stops)
        self.prompt_tokens = len(prompt_ids)
        self.first_piece_at: float | None = None  # monotonic seconds
        self.gone = False
        self.seq: EngineSequence = model.engine.submit(prompt_ids, params, adapter=model.adapter,
                                                       on_event=self._on_event)

    def _on_event(self, seq: Any, new_ids: list[int], finished: bool) -> None:
        """On the engine thread: hand the step's ids to the event loop, nothing else."""
        self.bridge.put(self.queue, (list(new_ids), finished))

    @property
    def completion_tokens(self) -> int:
        """Tokens of the answer as read (up to a stop sequence's token, if one ended it)."""
        return len(self.text.ids)

    @property
    def finish_reason(self) -> str | None:
        """``stop`` (end of turn or a stop sequence), ``length``, ``cancelled``, ``error``."""
        return "stop" if self.text.stopped else self.seq.finish_reason

    def cancel(self) -> None:
        """Free the slot (at the next engine step); harmless once finished."""
        if self.seq.finish_reason is None:
            self.seq.cancel()

    async def pieces(self, is_gone: IsGone | None = None) -> AsyncIterator[str]:
        """Text pieces as they become safe to send, until the answer ends.

        Raises:
            ClientGone: ``is_gone`` said the client left (the sequence is cancelled).
        """
        watcher = asyncio.ensure_future(self._watch(is_gone)) if is_gone is not None else None
        try:
            while True:
                item = await self.queue.get()
                if item is _GONE:
                    raise ClientGone
                new_ids, finished = item
                piece = self.text.add(new_ids)
                if self.text.stopped:
                    self.cancel()
                    finished = True
                elif finished:
                    piece += self.text.finish()
                if piece and self.first_piece_at is None:
                    self.first_piece_at = time.monotonic()
                if piece:
                    yield piece
                if finished:
                    return
        finally:
            if watcher is not None:
                watcher.cancel()

    async def answer(self, is_gone: IsGone | None = None) -> str:
        """The whole answer (cut at a stop sequence)."""
        async for _ in self.pieces(is_gone):
            pass
        return self.text.text

    async def _watch(self, is_gone: IsGone) -> None:
        """Every ``POLL_SECONDS``: a client that left cancels the sequence and wakes the reader."""
        while self.seq.finish_reason is None:
            await asyncio.sleep(POLL_SECONDS)
            if await is_gone():
                self.gone = True
                self.cancel()
                self.queue.put_nowait(_GONE)
                return
