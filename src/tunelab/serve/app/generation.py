"""One request inside the engine, seen from the event loop: events in, text pieces out.

``Generation`` submits a prompt to the model's ``ServingEngine`` and bridges the
engine's ``on_event`` callback (called on the engine's thread after each step) to an
``asyncio.Queue`` with ``loop.call_soon_threadsafe``: the engine thread does nothing
more than schedule a put. The reader turns ids into text pieces (``AnswerText``: whole
decode, new suffix, stop sequences), and a stop sequence found cancels the sequence so
its slot frees at the next step.

A client that goes away is noticed by polling ``is_gone`` (Starlette's
``Request.is_disconnected``) at most ``POLL_SECONDS`` apart, also while tokens keep
arriving, and cancels the sequence: its slot frees within one engine step after that.
This module knows nothing of HTTP routes or response shapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from tunelab.serve.app.text import AnswerText
from tunelab.serve.batching import SamplingParams
from tunelab.serve.batching import Sequence as EngineSequence
from tunelab.serve.registry import ServedModel

POLL_SECONDS = 0.1  # how often a waiting request checks that its client is still there

IsGone = Callable[[], Awaitable[bool]]


class ClientGone(Exception):
    """The client closed the connection before the answer was complete."""


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
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[list[int], bool]] = asyncio.Queue()
        self.text = AnswerText(model.decode, stops)
        self.prompt_tokens = len(prompt_ids)
        self.first_piece_at: float | None = None  # monotonic seconds
        self._checked = time.monotonic()
        self.seq: EngineSequence = model.engine.submit(prompt_ids, params, adapter=model.adapter,
                                                       on_event=self._on_event)

    def _on_event(self, seq: Any, new_ids: list[int], finished: bool) -> None:
        """On the engine thread: hand the step's ids to the event loop, nothing else."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (list(new_ids), finished))
        except RuntimeError:  # the loop is closed: the server is gone, nobody reads
            pass

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
        while True:
            new_ids, finished = await self._next_event(is_gone)
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

    async def answer(self, is_gone: IsGone | None = None) -> str:
        """The whole answer (cut at a stop sequence)."""
        async for _ in self.pieces(is_gone):
            pass
        return self.text.text

    async def _next_event(self, is_gone: IsGone | None) -> tuple[list[int], bool]:
        while True:
            now = time.monotonic()
            if is_gone is not None and now - self._checked >= POLL_SECONDS:
                self._checked = now
                if await is_gone():
                    self.cancel()
                    raise ClientGone
            if not self.queue.empty():
                return self.queue.get_nowait()
            try:
                return await asyncio.wait_for(self.queue.get(), POLL_SECONDS)
            except asyncio.TimeoutError:
                continue
