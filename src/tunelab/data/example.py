"""The canonical training example every input format is turned into.

An ``Example`` is either a conversation (``messages``) or a plain text (``text``). It
remembers where it came from (``source`` and ``line``) so that every later stage can
point the user at the exact row. This module knows nothing of files, formats or
tokenizers: readers and formats build examples, templates render them.

Tool use (``tunelab.data.tools``): an example may declare ``tools`` (function
specifications), an assistant turn may carry ``tool_calls``, and a ``tool`` turn carries a
call's result, matched to its call by ``tool_call_id`` (OpenAI) or by order (ShareGPT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The roles a message may have; keep this the one list. ``tool`` carries a call's result.
ROLES = ("system", "user", "assistant", "tool")

# ShareGPT speaker names seen in the wild, mapped to our roles.
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bing": "assistant", "bard": "assistant",
    "system": "system",
    "observation": "tool", "tool": "tool",  # LLaMA-Factory / Glaive: a call's result
}

# The ShareGPT speaker whose value is a tool call (JSON text), LLaMA-Factory's name for it.
SHAREGPT_CALL = "function_call"


@dataclass(frozen=True)
class ToolCall:
    """One call of a declared function by the assistant.

    Args:
        name: the function's name.
        arguments: the arguments, parsed from JSON (an object for a well-formed call).
        id: the call's id (OpenAI's ``tool_calls[].id``); None where the format has none.
    """

    name: str
    arguments: Any
    id: str | None = None


@dataclass(frozen=True)
class Message:
    """One turn of a conversation.

    Args:
        role: one of ``ROLES``.
        content: the text of the turn (``""`` for an assistant turn that only calls tools).
        weight: 0 or 1 from the chat format (train on this turn or not); ``None`` means
            the default: assistant turns are trained, the others are not.
        tool_calls: assistant turns: the tools called, in order.
        tool_call_id: ``tool`` turns: the id of the call this result answers, if given.
        name: ``tool`` turns: the function whose result this is, if given.
    """

    role: str
    content: str
    weight: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


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
        tools: the functions the conversation may call, each ``{"name", "description"?,
            "parameters"?}`` (JSON Schema parameters); empty without tools.
    """

    messages: list[Message]
    text: str | None = None
    source: str = ""
    line: int = 0
    meta: dict = field(default_factory=dict)
    rejected: str | None = None
    tools: tuple[dict, ...] = ()


def chat_role(raw: object) -> str | None:
    """An OpenAI-style ``role`` value as ours, or None when it is not one of ``ROLES``
    (OpenAI's older ``function`` result role is ``tool``)."""
    if raw == "function":
        return "tool"
    return raw if isinstance(raw, str) and raw in ROLES else None


def sharegpt_role(raw: object) -> str | None:
    """A ShareGPT ``from`` value (``human``, ``gpt``, ...) as our role, or None."""
    return SHAREGPT_ROLES.get(raw.lower()) if isinstance(raw, str) else None
