"""Tool use over HTTP: a chat request's tools and tool turns read in, calls read out.

In: a request's ``tools`` (OpenAI's ``[{"type": "function", "function": {...}}]``),
assistant turns with ``tool_calls`` (content may be null), ``tool`` turns with
``tool_call_id`` and contents given as lists of text parts are read with the readers
training uses (``tunelab.data.tools``), so a served conversation is the conversation
training rendered. A problem is a 400 naming the field (``messages[1].tool_calls[0]
.function.arguments``): declarations that are not functions or not JSON Schema, calls
whose arguments are not a JSON object, a tool result that answers no earlier call, a call
left without its result before the next turn. Calls in the history are not checked
against the declared schemas: they are what a model said, and the model sees them as such.

Out (``answer_calls``): the generated text is read with ``tunelab.data.tool_text.parse_calls``;
each call to a declared function whose arguments parse becomes an OpenAI ``tool_call``
(``call_<24 hex>`` id, arguments as JSON text); a call whose arguments do not parse, or
that names a function the request did not declare, stays in the content as text.

This module knows nothing of models, the engine or HTTP routes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunelab.data.example import Message, ToolCall
from tunelab.data.tool_text import parse_calls, turn_text
from tunelab.data.tools import check_conversation, join_parts, read_openai_calls, read_tools
from tunelab.serve.app.errors import APIError

# ``tool_choice`` values served: ``auto`` (the model decides) and ``none`` (no call is read
# out of the answer). ``required`` and a named function would need constrained decoding.
TOOL_CHOICES = ("auto", "none")


class _Problems:
    """Collects the readers' findings (``tunelab.data.tools.Reporter``); the first error
    becomes the 400."""

    def __init__(self) -> None:
        self.first: tuple[str | None, str, str] | None = None

    def error(self, field: str | None, code: str, message: str) -> None:
        if self.first is not None:
            return
        self.first = (field, code, message)

    def warning(self, field: str | None, code: str, message: str) -> None:
        pass  # warnings do not stop an answer

    def raise_first(self) -> None:
        if self.first is not None:
            where, code, message = self.first
            raise APIError(400, f"{where}: {message}" if where else message, param=where,
                           code=code)


@dataclass(frozen=True)
class Conversation:
    """A chat request as the template renders it.

    Args:
        messages: the turns (``developer`` read as ``system``), contents joined.
        tools: the declared functions (``{"name", "description"?, "parameters"?}``).
        read_calls: whether calls are read out of the answer (tools given, choice not none).
    """

    messages: list[Message]
    tools: tuple[dict, ...] = ()
    read_calls: bool = False

    def log_text(self) -> str:
        """The prompt as the request log keeps it: JSON of ``{"role", "content"}`` turns,
        a call written as its JSON line in the content (``tool_text.turn_text``), so readers
        of the log see text; ``tool_calls``/``tool_call_id`` ride along for tool turns."""
        out: list[dict[str, Any]] = []
        for m in self.messages:
            d: dict[str, Any] = {"role": m.role, "content": turn_text(m)}
            if m.tool_calls:
                d["tool_calls"] = [openai_call(c.id or "", c.name, c.arguments)
                                   for c in m.tool_calls]
            if m.tool_call_id is not None:
                d["tool_call_id"] = m.tool_call_id
            out.append(d)
        return json.dumps(out, ensure_ascii=False)


def read_conversation(messages: Sequence[Any], tools: Any, tool_choice: Any) -> Conversation:
    """The request's turns and tools, read as training reads a row.

    Args:
        messages: ``ChatMessage`` bodies (``role``, ``content``, ``tool_calls``,
            ``tool_call_id``, ``name``).
        tools: the request's ``tools`` value (None: none).
        tool_choice: the request's ``tool_choice`` (None, ``auto``, ``none``).

    Raises:
        APIError: 400 naming the first field at fault.
    """
    problems = _Problems()
    _check_choice(tool_choice)
    declared = read_tools(tools, "tools", problems) if tools is not None else ()
    turns: list[Message] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        content = _content(m.content, f"{where}.content", problems)
        role = "system" if m.role == "developer" else m.role
        calls: tuple[ToolCall, ...] = ()
        if m.tool_calls is not None and m.tool_calls != []:
            if role != "assistant":
                problems.error(f"{where}.tool_calls", "bad_tool_call",
                               f"only assistant messages carry tool_calls, not {m.role!r}")
            else:
                calls = read_openai_calls(m.tool_calls, f"{where}.tool_calls", problems) or ()
                for j, c in enumerate(calls):
                    if not c.id:
                        problems.error(f"{where}.tool_calls[{j}].id", "bad_tool_call",
                                       "a call needs its 'id' (the tool message answering it "
                                       "names it in tool_call_id)")
        call_id = None
        if role == "tool":
            call_id = m.tool_call_id
            if not isinstance(call_id, str) or not call_id:
                problems.error(f"{where}.tool_call_id", "bad_tool_result",
                               "a tool message needs 'tool_call_id', the id of the call it "
                               f"answers; got {call_id!r}")
        turns.append(Message(role, content or "", tool_calls=calls, tool_call_id=call_id,
                             name=m.name if role == "tool" else None))
    problems.raise_first()
    assert declared is not None  # read_tools reported its problem, raised above
    # A call in the history is what a model said: its function and arguments are not
    # checked (nor is a request's schema run here, on the server's time).
    check_conversation(declared, turns, [f"messages[{i}]" for i in range(len(turns))], problems,
                       check_arguments=False)
    problems.raise_first()
    return Conversation(turns, declared, bool(declared) and tool_choice != "none")


def _check_choice(choice: Any) -> None:
    if choice is None or choice in TOOL_CHOICES:
        return
    if choice == "required" or isinstance(choice, dict):
        what = "'required'" if choice == "required" else "a named function"
        raise APIError(400, f"tool_choice {what} cannot be honoured: this server does not "
                            "constrain generation to a call; send tool_choice 'auto' (the "
                            "model decides, as it was trained) or 'none'",
                       param="tool_choice", code="unsupported_tool_choice")
    raise APIError(400, f"tool_choice: {choice!r} is not one of 'auto', 'none'",
                   param="tool_choice", code="unsupported_tool_choice")


def _content(value: Any, where: str, problems: _Problems) -> str | None:
    if isinstance(value, list):
        return join_parts(value, where, problems)
    return value  # a string, or None (an assistant turn that only calls)


# -- the answer ------------------------------------------------------------------------


@dataclass
class Answer:
    """A generated answer split into text and the calls read out of it.

    Args:
        content: the text outside the calls (None when there is none and calls were made).
        calls: OpenAI ``tool_calls`` entries.
    """

    content: str | None
    calls: list[dict[str, Any]] = field(default_factory=list)

    def log_text(self) -> str:
        """The answer as the request log keeps it: the text, then one JSON line per call
        (``{"name", "arguments"}``), as the fallback renders a call in training."""
        calls = tuple(ToolCall(c["function"]["name"], json.loads(c["function"]["arguments"]))
                      for c in self.calls)
        return turn_text(Message("assistant", self.content or "", tool_calls=calls))


def answer_calls(text: str, tools: Sequence[dict]) -> Answer:
    """The calls in generated ``text`` to functions in ``tools``, and the text left.

    A call whose arguments are not a JSON object, or to a function not declared, is kept
    in the content as its text (after the rest of the text), not made a tool call.
    """
    content, found = parse_calls(text)
    if not found:
        return Answer(text)
    names = {t["name"] for t in tools}
    calls = [openai_call(new_call_id(), c.name, c.arguments) for c in found
             if c.arguments is not None and c.name in names]
    if not calls:
        return Answer(text)
    kept = [c.text for c in found if c.arguments is None or c.name not in names]
    rest = "\n".join(p for p in [content, *kept] if p)
    return Answer(rest or None, calls)


def openai_call(ident: str, name: str, arguments: Any) -> dict[str, Any]:
    """One ``tool_calls`` entry: ``{"id", "type": "function", "function": {"name",
    "arguments": <JSON text>}}``."""
    return {"id": ident, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def new_call_id() -> str:
    """``call_<24 hex>``."""
    return f"call_{uuid.uuid4().hex[:24]}"
