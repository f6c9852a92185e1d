"""An answer's text as its tokens arrive: the new suffix to send, and stop sequences.

Ids are decoded whole each time (a token's text can depend on its neighbours, and a
byte-level token may hold half a UTF-8 character), and only the text past what was
already sent goes out. Held back: a trailing ``"\\ufffd"`` (an incomplete character)
and a tail that could be the start of a stop sequence, so nothing sent has to be taken
back. The concatenated pieces therefore equal the final text, which is what a
non-streamed request returns. This module knows nothing of HTTP or the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"  # what a decoder writes for an incomplete UTF-8 sequence


class AnswerText:
    """The text of one answer, grown from token ids.

    Args:
        decode: ids -> text (the model's tokenizer, special tokens skipped).
        stops: stop sequences; the answer ends before the first one found.
    """

    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.text = ""  # the answer so far (cut at a stop sequence once one is found)
        self.sent = 0  # characters of ``text`` already handed out
        self.stopped = False  # a stop sequence was found

    def add(self, new_ids: Sequence[int]) -> str:
        """Take new ids; return the text that is now safe to send (maybe empty)."""
        if self.stopped or not new_ids:
            return ""
        self.ids.extend(new_ids)
        full = self.decode(self.ids)
        cut = first_stop(full, self.stops)
        if cut is not None:
            self.text, self.stopped = full[:cut], True
            return self._take(len(self.text))
        self.text = full
        return self._take(len(full) - self._held_back(full))

    def finish(self) -> str:
        """The generation ended: the rest of the text, held-back tail included."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.sent:
            return ""
        piece = self.text[self.sent:end]
        self.sent = end
        return piece

    def _held_back(self, full: str) -> int:
        """Characters at the end of ``full`` not safe to send yet."""
        n = len(full) - len(full.rstrip(REPLACEMENT))
        body = full[:len(full) - n]
        longest = max((len(s) for s in self.stops), default=0)
        for k in range(min(longest - 1, len(body)), 0, -1):
            tail = body[len(body) - k:]
            if any(s.startswith(tail) for s in self.stops):
                return n + k
        return n


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the first stop sequence in ``text`` begins, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None
