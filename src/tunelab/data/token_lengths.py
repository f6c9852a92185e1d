"""Token lengths of many examples under a chat template, fast enough for a data gate.

A length is that of the whole conversation rendered with the chat template and
tokenized in one piece (plain-text examples: the text with the tokenizer's own special
tokens, plus EOS when it does not end in an end-of-turn token, as ``tokenize_example``
trains them). Training tokenizes segment by segment, so its length can differ by a
token where a segment boundary splits a merge; for a length check that is immaterial.

Rows with tools (declarations, calls or results) are measured as training renders them:
``tokenize_example`` with the row's tools, in the tool format the template resolves to
(``resolve_tool_format``: the template's own ``tools=`` or the fallback), so the tools
block and the calls count. They take the plain path, one row at a time; tool files are
small next to the plain chats the shortcuts are for.

Three shortcuts make it fast, and each is checked against the plain path:

* The template is rendered once per sequence of roles, with placeholders for the
  contents; a row's text is that skeleton with its contents filled in. Templates that
  change contents (trim them, say) are caught by probes with awkward contents and are
  rendered row by row instead.
* The text is cut at the tokenizer's added special tokens (``<|im_start|>`` ...), which
  a fast tokenizer never merges with their neighbours, and each piece between them is
  tokenized on its own and cached: a system prompt shared by every row is tokenized once.
  The first rows are tokenized whole as well; if the counts disagree, cutting stops.
* Pieces are tokenized in batches.

This module receives a tokenizer object; it never loads one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from tunelab.data.example import Example, Message
from tunelab.data.template import (
    end_of_turn_ids,
    render_text,
    resolve_chat_template,
    tokenize_example,
)
from tunelab.data.tool_text import uses_tools

_BATCH = 4096  # texts per tokenizer call: large enough to amortize, small in memory
_PROBE = 32  # rows tokenized whole too, to check that cutting at specials is exact
# Private-use code points mark the content slots of a skeleton; text that holds them
# takes the plain path.
_OPEN, _CLOSE = "\ue000", "\ue001"
_SLOT = re.compile(_OPEN + r"(\d+)" + _CLOSE)
# Contents a template must pass through unchanged for skeletons to be used.
_AWKWARD = (" padded \n", "\n", "", "Line one\n\nline two ", "{{ x }} {% y %}")

Split = tuple[int, list[str]]  # (special tokens, the pieces between them)


def token_lengths(tokenizer: Any, examples: Sequence[Example],
                  template: str | None = None, tool_format: str | None = None) -> list[int]:
    """The token length of each example with the chat template, in order.

    Args:
        tokenizer: a Hugging Face tokenizer (a fast one is much quicker).
        examples: conversations or plain texts.
        template: as for ``resolve_chat_template``: ``None`` for the tokenizer's own.
        tool_format: how rows with tools are rendered, as for ``tokenize_example``
            (``None``: as ``resolve_tool_format`` picks for the template).

    Returns:
        One length per example.

    Raises:
        DataError: a conversation needs a template and there is none, or a row with
            tools cannot be rendered in ``tool_format``.
    """
    tooled = {i for i, e in enumerate(examples)
              if e.text is None and uses_tools(e.messages, e.tools)}
    chats = [i for i, e in enumerate(examples) if e.text is None and i not in tooled]
    texts = [i for i, e in enumerate(examples) if e.text is not None]
    out = [0] * len(examples)
    if chats:
        counter = _Counter(tokenizer, resolve_chat_template(tokenizer, template))
        for start in range(0, len(chats), _BATCH):
            chunk = chats[start:start + _BATCH]
            counts = counter.count([examples[i].messages for i in chunk], probe=start == 0)
            for i, n in zip(chunk, counts, strict=True):
                out[i] = n
    if texts:
        eot = end_of_turn_ids(tokenizer)
        eos = 0 if tokenizer.eos_token_id is None else 1
        for start in range(0, len(texts), _BATCH):
            chunk = texts[start:start + _BATCH]
            ids = tokenizer([examples[i].text for i in chunk],
                            add_special_tokens=True)["input_ids"]
            for i, row in zip(chunk, ids, strict=True):
                out[i] = len(row) + (0 if row and row[-1] in eot else eos)
    for i in sorted(tooled):  # the tools block and the calls count, as training renders them
        out[i] = len(tokenize_example(tokenizer, examples[i], template, tool_format).input_ids)
    return out


class _Counter:
    """Token counts of conversations: skeletons, cutting at specials, a piece cache."""

    def __init__(self, tokenizer: Any, template: str) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.encode = _encoder(tokenizer)
        self.split = _special_splitter(tokenizer)
        self.cache: dict[str, int] = {}
        self.skeletons: dict[tuple[str, ...], list[str | tuple[str | int, ...]] | None] = {}
        self.specials: dict[tuple[str, ...], int] = {}
        added = getattr(tokenizer, "added_tokens_decoder", None) or {}
        # First characters of special tokens, and the slot markers: a content without any
        # of them can be filled into a skeleton as it is.
        starts = {str(t)[:1] for t in added.values() if str(t)} | {_OPEN, _CLOSE}
        self.unsafe = re.compile("[" + "".join(re.escape(c) for c in sorted(starts)) + "]").search

    def render(self, messages: Sequence[Message]) -> str:
        return render_text(self.tokenizer, messages, self.template, add_generation_prompt=False)

    def count(self, conversations: list[list[Message]], probe: bool) -> list[int]:
        if self.split is None:
            return self.encode([self.render(m) for m in conversations])
        splits = [self._pieces(m) for m in conversations]
        new = list({p for _, pieces in splits for p in pieces if p not in self.cache})
        for start in range(0, len(new), _BATCH):
            chunk = new[start:start + _BATCH]
            self.cache.update(zip(chunk, self.encode(chunk), strict=True))
        counts = [n + sum(self.cache[p] for p in pieces) for n, pieces in splits]
        if probe:
            whole = self.encode([self.render(m) for m in conversations[:_PROBE]])
            if whole != counts[:len(whole)]:  # the tokenizer merges across specials after all
                self.split = None
                return self.encode([self.render(m) for m in conversations])
        return counts

    def _pieces(self, messages: list[Message]) -> Split:
        """The special-token count and pieces of one conversation's rendered text."""
        roles = tuple(m.role for m in messages)
        if roles not in self.skeletons:
            self.skeletons[roles] = self._skeleton(roles)
        skeleton = self.skeletons[roles]
        contents = [m.content for m in messages]
        assert self.split is not None  # count() builds pieces only while splitting is on
        if skeleton is None or self.unsafe("".join(contents)):
            return self.split(self.render(messages))
        pieces = []
        for part in skeleton:
            if isinstance(part, str):
                pieces.append(part)
            else:
                piece = "".join([contents[p] if isinstance(p, int) else p for p in part])
                if piece:
                    pieces.append(piece)
        return self.specials[roles], pieces

    def _skeleton(self, roles: tuple[str, ...]) -> list[str | tuple[str | int, ...]] | None:
        """The pieces of the template rendered with slots, or None if contents are changed."""
        slots = [Message(r, f"{_OPEN}{i}{_CLOSE}") for i, r in enumerate(roles)]
        try:
            text = self.render(slots)
            for awkward in _AWKWARD:
                filled = [Message(r, awkward) for r in roles]
                # mypy cannot type a lambda with a default; the default binds this loop's value
                if self.render(filled) != _SLOT.sub(lambda _, a=awkward: a, text):  # type: ignore[misc]
                    return None
        except Exception:  # a template that raises on odd contents: render row by row
            return None
        assert self.split is not None  # skeletons are built only while splitting is on
        count, pieces = self.split(text)
        self.specials[roles] = count
        parts: list[str | tuple[str | int, ...]] = []
        for piece in pieces:
            bits = _SLOT.split(piece)  # literal, slot, literal, ...
            if len(bits) == 1:
                parts.append(piece)  # no content in it: the same for every row
            else:
                parts.append(tuple(int(b) if i % 2 else b for i, b in enumerate(bits)
                                   if i % 2 or b))
        return parts


def _encoder(tokenizer: Any) -> Callable[[list[str]], list[int]]:
    """Token counts of a batch of texts, without special tokens added."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        batch = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        return lambda texts: [len(e) for e in batch(texts, add_special_tokens=False)]
    return lambda texts: [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _special_splitter(tokenizer: Any) -> Callable[[str], Split] | None:
    """A function giving (number of special tokens, the pieces between them) of a text.

    ``None`` when the tokenizer's added tokens may strip or normalize their neighbours,
    where cutting at them would not be exact.
    """
    added = getattr(tokenizer, "added_tokens_decoder", None)
    if not added:
        return None
    tokens = []
    for token in added.values():
        if getattr(token, "lstrip", False) or getattr(token, "rstrip", False) \
                or getattr(token, "single_word", False) or getattr(token, "normalized", True):
            return None
        tokens.append(str(token))
    pattern = re.compile("(" + "|".join(re.escape(t) for t in
                                        sorted(tokens, key=len, reverse=True)) + ")")

    def split(text: str) -> Split:
        parts = pattern.split(text)  # odd positions are the special tokens
        return len(parts) // 2, [p for p in parts[0::2] if p]

    return split
