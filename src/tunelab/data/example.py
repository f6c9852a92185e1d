"""The canonical training example every input format is turned into.

An ``Example`` is either a conversation (``messages``) or a plain text (``text``). It
remembers where it came from (``source`` and ``line``) so that every later stage can
point the user at the exact row. This module knows nothing of files, formats or
tokenizers: readers and formats build examples, templates render them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The roles a message may have. Tool roles may be added later; keep this the one list.
ROLES = ("system", "user", "assistant")

# ShareGPT speaker names seen in the wild, mapped to our roles.
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bing": "assistant", "bard": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class Message:
    """One turn of a conversation.

    Args:
        role: one of ``ROLES``.
        content: the text of the turn.
        weight: 0 or 1 from the chat format (train on this turn or not); ``None`` means
            the default: assistant turns are trained, the others are not.
    """

    role: str
    content: str
    weight: float | None = None


@dataclass
class Example:
    """One training example with its origin.

    Args:
        messages: the conversation; empty for plain-text examples.
        text: plain-text examples only: every token is trained.
        source: the file path as the user gave it.
        line: 1-based physical line (JSONL, JSON, CSV, TSV) or 1-based row (Parquet).
        meta: top-level fields the format does not use (e.g. ``label``, ``id``), kept as is.
        rejected: preference pairs only (``tunelab.data.pairs``): the answer to avoid after
            the same prompt; ``messages`` then end with the preferred answer.
    """

    messages: list[Message]
    text: str | None = None
    source: str = ""
    line: int = 0
    meta: dict = field(default_factory=dict)
    rejected: str | None = None


def chat_role(raw: object) -> str | None:
    """An OpenAI-style ``role`` value as ours, or None when it is not one of ``ROLES``."""
    return raw if isinstance(raw, str) and raw in ROLES else None


def sharegpt_role(raw: object) -> str | None:
    """A ShareGPT ``from`` value (``human``, ``gpt``, ...) as our role, or None."""
    return SHAREGPT_ROLES.get(raw.lower()) if isinstance(raw, str) else None
