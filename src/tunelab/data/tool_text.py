"""Tool use as text: the fallback layout, transformers' shapes, calls read from answers.

How tools are rendered (``FALLBACK``): when a chat template renders tools itself
(transformers' ``tools=`` argument; ``tunelab.data.template.resolve_tool_format`` probes
it), it is used; otherwise every model gets the same fallback: the declarations as JSON
lines at the end of the system turn, each call as one JSON line ``{"name": ...,
"arguments": {...}}`` in the assistant turn, each result as a ``tool`` turn.
``parse_calls`` reads calls back out of generated text, in either style. This module
knows nothing of files, tokenizers or models; ``tunelab.data.tools`` reads and checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunelab.data.example import Message, ToolCall

# How tools are rendered: by the chat template itself, or by the one fallback below.
TOOL_FORMATS = ("template", "fallback")
FALLBACK = "fallback"
TEMPLATE = "template"

# The text the fallback appends to the system turn, before one JSON line per function.
FALLBACK_TOOLS_HEADER = (
    "You can call these functions. To call one, answer with only a JSON object per call, "
    'one per line: {"name": <function name>, "arguments": <arguments object>}.\n'
    "Functions:")


def call_json(call: ToolCall) -> str:
    """One call as the fallback writes it: ``{"name": ..., "arguments": {...}}``."""
    return json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)


def turn_text(m: Message) -> str:
    """A turn's text with its calls as JSON lines: what dedup and leakage compare."""
    calls = "\n".join(call_json(c) for c in m.tool_calls)
    if not calls:
        return m.content
    return f"{m.content}\n{calls}" if m.content.strip() else calls


def fallback_messages(messages: Sequence[Message], tools: Sequence[dict]) -> list[Message]:
    """The conversation in the fallback layout: plain turns any chat template renders.

    The declarations go at the end of the system turn (one is added first when there is
    none), each call becomes a JSON line of its assistant turn, results stay ``tool``
    turns. Turn ``i`` of the input is turn ``i`` (``i + 1`` when a system turn was added)
    of the output, with its weight.
    """
    out = [Message(m.role, turn_text(m), m.weight) if m.tool_calls else
           Message(m.role, m.content, m.weight) if m.role == "tool" else m for m in messages]
    if tools:
        block = FALLBACK_TOOLS_HEADER + "".join(
            "\n" + json.dumps(t, ensure_ascii=False) for t in tools)
        if out and out[0].role == "system":
            first = out[0]
            text = f"{first.content}\n\n{block}" if first.content.strip() else block
            out[0] = Message("system", text, first.weight)
        else:
            out.insert(0, Message("system", block))
    return out


def template_dicts(messages: Sequence[Message]) -> list[dict]:
    """The turns as transformers' chat templates take them with ``tools=``."""
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [{"type": "function", **({"id": c.id} if c.id else {}),
                                "function": {"name": c.name, "arguments": c.arguments}}
                               for c in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        if m.role == "tool" and m.name is not None:
            d["name"] = m.name
        out.append(d)
    return out


def template_tools(tools: Sequence[dict]) -> list[dict]:
    """Declarations in the shape templates take (``{"type": "function", "function"}``)."""
    return [{"type": "function", "function": dict(t)} for t in tools]


def uses_tools(messages: Sequence[Message], tools: Sequence[dict]) -> bool:
    """Whether a conversation needs tool rendering at all (else it renders as before)."""
    return bool(tools) or any(m.tool_calls or m.role == "tool" for m in messages)


# -- reading calls back out of generated text ------------------------------------------


@dataclass(frozen=True)
class ParsedCall:
    """A call found in generated text.

    Args:
        name: the function named.
        arguments: the arguments object; None when they are not valid JSON.
        text: the call's text as generated.
    """

    name: str
    arguments: dict | None
    text: str


_NAME = re.compile(r'"name"\s*:\s*"([^"\\]+)"')
_WRAPPERS = re.compile(r"</?tool_call>|<\|python_tag\|>|```(?:json)?")


def parse_calls(text: str) -> tuple[str, list[ParsedCall]]:
    """The calls in an answer, and the text left around them.

    A call is a JSON object with a string ``name`` and an ``arguments`` (or ``parameters``)
    object, as the fallback writes it and as most tool templates do (inside
    ``<tool_call>`` tags or not). An object that names a function but does not parse (cut
    off, broken quoting) is a call with ``arguments=None``.

    Returns:
        ``(content, calls)``: the text outside the calls, stripped, and the calls in order.
    """
    decoder = json.JSONDecoder()
    calls: list[ParsedCall] = []
    kept: list[str] = []
    pos = 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            kept.append(text[pos:])
            break
        try:
            obj, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            obj, end = None, start + 1
        if isinstance(obj, dict) and isinstance(obj.get("name"), str) \
                and ("arguments" in obj or "parameters" in obj):
            args = obj.get("arguments", obj.get("parameters"))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except (ValueError, RecursionError):
                    args = None
            kept.append(text[pos:start])
            calls.append(ParsedCall(obj["name"], args if isinstance(args, dict) else None,
                                    text[start:end]))
            pos = end
            continue
        if obj is None:
            broken = _NAME.match(text, start + 1 + _spaces(text, start + 1))
            if broken is not None:  # a call that does not parse: runs to the line's end
                stop = text.find("\n", start)
                stop = len(text) if stop < 0 else stop
                kept.append(text[pos:start])
                calls.append(ParsedCall(broken.group(1), None, text[start:stop]))
                pos = stop
                continue
        kept.append(text[pos:end])
        pos = end
    content = _WRAPPERS.sub("", "".join(kept)).strip() if calls else text.strip()
    return content, calls


def _spaces(text: str, pos: int) -> int:
    n = 0
    while pos + n < len(text) and text[pos + n].isspace():
        n += 1
    return n


def normalized(value: Any) -> str:
    """A JSON value as canonical text (sorted keys): equal arguments compare equal."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
