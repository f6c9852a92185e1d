"""Tool use in training data: declarations, calls, results, content parts, and their checks.

What is read (``tunelab.data.formats`` calls these while it reads a row):

* declarations: OpenAI's ``tools`` (``[{"type": "function", "function": {"name",
  "description", "parameters"}}]``), the older ``functions`` (the bare function objects),
  and ShareGPT's ``tools`` (JSON text or a list, bare or wrapped);
* calls: an assistant message's ``tool_calls`` (``id``, ``function.name``,
  ``function.arguments`` as JSON text), the older ``function_call``, and ShareGPT's
  ``function_call`` turn (JSON text ``{"name", "arguments"}`` with the arguments as an
  object, or a list of such calls);
* results: ``tool`` messages (``tool_call_id``), the older ``function`` messages
  (``name``), ShareGPT's ``observation`` turns (matched to calls in order);
* content parts: a list of ``{"type": "text", "text"}`` (or ``"value"``) joined in order
  with newlines; any other part type is an error naming it.

What is checked (``check_conversation``): arguments must be JSON and match the declared
function's ``parameters`` schema (``jsonschema``); a call to an undeclared function, a
result that answers no earlier call, and a call left unanswered when the next user turn
(or the assistant's next answer) comes are each a finding with the field they are in.

How tools are rendered, and calls read back out of generated text: ``tool_text``.
This module knows nothing of files or models.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import jsonschema
from referencing.exceptions import Unresolvable

from tunelab.data.example import Message, ToolCall
from tunelab.data.findings import show_value, type_name

# The codes of the findings this module reports (the profile counts a file's tool findings).
FINDING_CODES = ("bad_tools", "duplicate_tool", "bad_tool_schema", "bad_tool_call",
                 "bad_arguments_json", "undeclared_tool", "arguments_mismatch",
                 "unmatched_tool_result", "unanswered_call", "non_text_part", "bad_content_part")
# The codes among them that concern tools (content parts are not tool use).
TOOL_FINDING_CODES = FINDING_CODES[:9]

# The part types of a content list that hold text, and the key each keeps it under.
_TEXT_PART_KEYS = ("text", "value")
# Schema errors named per call before "and N more".
_SCHEMA_ERRORS_SHOWN = 3


class Reporter(Protocol):
    """What collects a row's findings (``formats._Row``)."""

    def error(self, field: str | None, code: str, message: str) -> None: ...

    def warning(self, field: str | None, code: str, message: str) -> None: ...


def _json_text(text: str) -> tuple[object, str | None]:
    """Parse JSON text: ``(value, None)``, or ``(None, why)`` when it is not JSON or nests
    deeper than the parser goes (a crafted ``[[[[...`` would otherwise crash the reader)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"{e.msg} at character {e.pos}"
    except RecursionError:
        return None, "nested too deeply"


# -- content parts ---------------------------------------------------------------------


def join_parts(value: list, field: str, row: Reporter) -> str | None:
    """The text of a content given as a list of parts, joined in order with newlines.

    Returns:
        The text, or None (with an error per bad part) when a part is not a text part.
    """
    texts: list[str] = []
    ok = True
    for i, part in enumerate(value):
        where = f"{field}[{i}]"
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            row.error(where, "bad_content_part",
                      f"a content part must be an object like {{'type': 'text', 'text': ...}}, "
                      f"got {type_name(part)} {show_value(part)}")
            ok = False
            continue
        kind = part.get("type", "text")
        if kind != "text":
            row.error(f"{where}.type", "non_text_part",
                      f"content part type {show_value(kind)} is not text; tunelab trains text "
                      "models only: remove the part, or describe it in a text part")
            ok = False
            continue
        key = next((k for k in _TEXT_PART_KEYS if k in part), None)
        text = part.get(key) if key else None
        if not isinstance(text, str):
            row.error(where, "bad_content_part",
                      f"a text part needs 'text' (or 'value') holding a string, got "
                      f"{show_value(part)}; write it as {{'type': 'text', 'text': '...'}}")
            ok = False
            continue
        texts.append(text)
    return "\n".join(texts) if ok else None


# -- declarations ----------------------------------------------------------------------


def read_tools(value: object, field: str, row: Reporter) -> tuple[dict, ...] | None:
    """Function declarations, each as ``{"name", "description"?, "parameters"?}``.

    Args:
        value: a ``tools`` or ``functions`` field: a list (or JSON text of one) of
            ``{"type": "function", "function": {...}}`` or bare function objects.
        field: its name, for findings.
        row: collects findings.

    Returns:
        The declarations in order, or None when any is malformed (each reported).
    """
    if isinstance(value, str):
        if not value.strip():
            return ()
        value, why = _json_text(value)
        if why is not None:
            row.error(field, "bad_tools",
                      f"{field} is text that is not JSON ({why}); write the list of functions "
                      "as JSON")
            return None
    if value is None:
        return ()
    if not isinstance(value, list):
        row.error(field, "bad_tools",
                  f"{field} must be a list of functions, got {type_name(value)} {show_value(value)}")
        return None
    out: list[dict] = []
    names: set[str] = set()
    ok = True
    for i, item in enumerate(value):
        spec = _function_spec(item, f"{field}[{i}]", row)
        if spec is None:
            ok = False
            continue
        if spec["name"] in names:
            wrapped = isinstance(item, dict) and isinstance(item.get("function"), dict)
            row.error(f"{field}[{i}]{'.function' if wrapped else ''}.name", "duplicate_tool",
                      f"function {spec['name']!r} is declared twice; keep one declaration")
            ok = False
            continue
        names.add(spec["name"])
        out.append(spec)
    return tuple(out) if ok else None


def _function_spec(item: object, where: str, row: Reporter) -> dict | None:
    if isinstance(item, dict) and isinstance(item.get("function"), dict):
        kind = item.get("type", "function")
        if kind != "function":
            row.error(f"{where}.type", "bad_tools",
                      f"tool type {show_value(kind)} is not 'function'; only functions can be called")
            return None
        where, item = f"{where}.function", item["function"]
    if not isinstance(item, dict):
        row.error(where, "bad_tools",
                  f"a tool must be an object like {{'type': 'function', 'function': {{'name': ..., "
                  f"'parameters': ...}}}}, got {type_name(item)} {show_value(item)}")
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        row.error(f"{where}.name", "bad_tools",
                  f"a function needs a non-empty 'name', got {show_value(name)}; name it")
        return None
    spec: dict = {"name": name}
    if item.get("description") is not None:
        spec["description"] = item["description"]
    params = item.get("parameters")
    if params is not None:
        problem = _schema_problem(params)
        if problem is not None:
            row.error(f"{where}.parameters", "bad_tool_schema",
                      f"the parameters of {name!r} are not a valid JSON Schema ({problem}); fix "
                      "the schema")
            return None
        spec["parameters"] = params
    return spec


def _schema_problem(schema: object) -> str | None:
    if not isinstance(schema, dict):
        return f"got {type_name(schema)}, not an object"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        return e.message
    except RecursionError:
        return "it nests too deeply"
    remote = _remote_ref(schema)
    if remote is not None:
        return (f"$ref {remote!r} points outside the schema; tunelab fetches nothing, so "
                "write the definition into the schema (under $defs) and refer to '#/$defs/...'")
    return None


def _remote_ref(schema: object) -> str | None:
    """The first ``$ref`` that does not point into the schema itself (``#...``), if any."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                return ref
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


# -- calls -----------------------------------------------------------------------------


def read_openai_calls(value: object, field: str, row: Reporter) -> tuple[ToolCall, ...] | None:
    """An assistant message's ``tool_calls``: ``[{"id", "type", "function": {"name",
    "arguments"}}]``, the arguments as JSON text (an object is accepted too)."""
    if not isinstance(value, list):
        row.error(field, "bad_tool_call",
                  f"tool_calls must be a list of calls, got {type_name(value)} {show_value(value)}")
        return None
    out, ok = [], True
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        fn = item.get("function") if isinstance(item, dict) else None
        if not isinstance(fn, dict):
            row.error(where, "bad_tool_call",
                      "a tool call must be an object like {'id': ..., 'type': 'function', "
                      f"'function': {{'name': ..., 'arguments': '{{...}}'}}}}, got {show_value(item)}")
            ok = False
            continue
        ident = item.get("id")
        if ident is not None and not isinstance(ident, str):
            row.error(f"{where}.id", "bad_tool_call", f"a call's id must be a string, got {show_value(ident)}")
            ok = False
            continue
        call = _call(fn, f"{where}.function", row, ident)
        ok = ok and call is not None
        if call is not None:
            out.append(call)
    return tuple(out) if ok else None


def read_legacy_call(value: object, field: str, row: Reporter) -> tuple[ToolCall, ...] | None:
    """OpenAI's older ``function_call``: one ``{"name", "arguments"}``."""
    if not isinstance(value, dict):
        row.error(field, "bad_tool_call",
                  f"function_call must be an object {{'name': ..., 'arguments': '{{...}}'}}, got "
                  f"{type_name(value)} {show_value(value)}")
        return None
    call = _call(value, field, row, None)
    return None if call is None else (call,)


def read_sharegpt_calls(value: object, field: str, row: Reporter) -> tuple[ToolCall, ...] | None:
    """A ShareGPT ``function_call`` turn's value: JSON text of one call ``{"name",
    "arguments"}`` or a list of them (LLaMA-Factory writes the arguments as an object)."""
    if isinstance(value, str):
        text = value
        value, why = _json_text(text)
        if why is not None:
            row.error(field, "bad_tool_call",
                      f"a function_call turn must hold JSON {{'name': ..., 'arguments': {{...}}}}, "
                      f"got text that is not JSON ({why}): {show_value(text)}")
            return None
    items = value if isinstance(value, list) else [value]
    out, ok = [], True
    for i, item in enumerate(items):
        where = f"{field}[{i}]" if isinstance(value, list) else field
        if not isinstance(item, dict):
            row.error(where, "bad_tool_call",
                      f"a call must be an object {{'name': ..., 'arguments': {{...}}}}, got "
                      f"{type_name(item)} {show_value(item)}")
            ok = False
            continue
        call = _call(item, where, row, None)
        ok = ok and call is not None
        if call is not None:
            out.append(call)
    return tuple(out) if ok else None


def _call(fn: dict, where: str, row: Reporter, ident: str | None) -> ToolCall | None:
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        row.error(f"{where}.name", "bad_tool_call",
                  f"a call needs the function's 'name', got {show_value(name)}; name the function")
        return None
    raw = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(raw, str):
        args, why = _json_text(raw) if raw.strip() else ({}, None)
        if why is not None:
            row.error(f"{where}.arguments", "bad_arguments_json",
                      f"the arguments of the call to {name!r} are not valid JSON ({why}): "
                      f"{show_value(raw)}; write them as a JSON object")
            return None
    else:
        args = raw
    if not isinstance(args, dict):
        row.error(f"{where}.arguments", "bad_arguments_json",
                  f"the arguments of the call to {name!r} must be a JSON object, got "
                  f"{type_name(args)} {show_value(args)}")
        return None
    return ToolCall(name, args, ident)


# -- the conversation as a whole -------------------------------------------------------


def check_conversation(tools: Sequence[dict], messages: Sequence[Message], wheres: Sequence[str],
                       row: Reporter, tools_field: str = "tools",
                       call_fields: Sequence[Sequence[str]] | None = None,
                       check_arguments: bool = True) -> None:
    """Report calls that do not fit the declarations, results that answer no call, and
    calls left unanswered.

    Args:
        tools: the row's declarations (``read_tools``).
        messages: the row's turns, in order.
        wheres: each turn's field (``messages[3]``), for findings.
        row: collects findings.
        tools_field: the row's declarations field, for findings.
        call_fields: per turn, the field of each of its calls as the row writes it
            (``messages[1].tool_calls[0].function``, ``conversations[1].value``), so a
            finding names the field the reader named; None: ``<turn>.tool_calls[j]``.
        check_arguments: check each call's function and arguments against the
            declarations; the server does not (a call in a request's history is what a
            model said, and a request's schema is not run on the server's time).
    """
    declared = {t["name"]: t for t in tools}
    pending = _Pending()
    for i, (m, where) in enumerate(zip(messages, wheres, strict=True)):
        if m.role == "assistant" and m.tool_calls:
            _unanswered(pending, "the assistant calls again", row)
            pending = _Pending()
            for j, call in enumerate(m.tool_calls):
                at = call_fields[i][j] if call_fields is not None else f"{where}.tool_calls[{j}]"
                if check_arguments:
                    _check_call(call, declared, at, row, tools_field)
                pending.add(call, at)
        elif m.role == "tool":
            _answer(m, pending, where, row)
        elif m.role == "user":
            _unanswered(pending, "the next user turn", row)
            pending = _Pending()
        elif m.role == "assistant":
            _unanswered(pending, "the assistant answers", row)
            pending = _Pending()


class _Pending:
    """Calls waiting for their result, in order, found by id, by name or first: each in
    constant time, so a conversation of many calls is checked in linear time."""

    def __init__(self) -> None:
        self.calls: dict[int, tuple[ToolCall, str]] = {}  # by arrival, insertion-ordered
        self._by: dict[tuple[str, str], deque[int]] = {}
        self._arrived = 0

    def add(self, call: ToolCall, at: str) -> None:
        self._arrived += 1
        self.calls[self._arrived] = (call, at)
        if call.id is not None:
            self._by.setdefault(("id", call.id), deque()).append(self._arrived)
        self._by.setdefault(("name", call.name), deque()).append(self._arrived)

    def take(self, kind: str | None, value: str | None) -> bool:
        """Remove the first waiting call with this id or name (any call when ``kind`` is
        None); False when none waits."""
        if kind is None:
            key = next(iter(self.calls), None)
        else:
            keys = self._by.get((kind, value or ""), deque())
            while keys and keys[0] not in self.calls:  # answered already, by another route
                keys.popleft()
            key = keys[0] if keys else None
        if key is None:
            return False
        del self.calls[key]
        return True


def _check_call(call: ToolCall, declared: dict[str, dict], where: str, row: Reporter,
                tools_field: str) -> None:
    spec = declared.get(call.name)
    if spec is None:
        names = ", ".join(map(repr, declared)) or "none"
        row.error(f"{where}.name", "undeclared_tool",
                  f"the call is to {call.name!r}, which the row does not declare in "
                  f"{tools_field!r} (declared: {names}); declare the function or fix the name")
        return
    errors = arguments_problems(spec, call.arguments)
    if not errors:
        return
    shown = "; ".join(errors[:_SCHEMA_ERRORS_SHOWN])
    more = len(errors) - _SCHEMA_ERRORS_SHOWN
    row.error(f"{where}.arguments", "arguments_mismatch",
              f"the arguments of the call to {call.name!r} do not match its parameters: {shown}"
              f"{f' and {more} more' if more > 0 else ''}; fix the arguments or the declaration")


def _schema_error(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return f"{path}: {error.message}" if path else error.message


def arguments_problems(spec: dict, arguments: object) -> list[str]:
    """What keeps a call's arguments from fitting its function's declaration.

    Args:
        spec: the function's declaration (``read_tools``).
        arguments: the call's arguments, parsed.

    Returns:
        One line per schema error (``path: message``), by path; ``[]`` when they fit or
        the function declares no parameters.
    """
    if not isinstance(arguments, dict):
        return [f"the arguments must be a JSON object, got {type_name(arguments)}"]
    schema = spec.get("parameters")
    if schema is None:
        return []
    validator = jsonschema.validators.validator_for(schema)(schema)
    try:
        errors = sorted(validator.iter_errors(arguments),
                        key=lambda e: list(map(str, e.absolute_path)))
    except Unresolvable as e:  # a local $ref to nothing ('#/$defs/missing')
        return [f"the schema cannot be applied: its $ref does not resolve ({e})"]
    except RecursionError:
        return ["the schema cannot be applied: it refers to itself without end"]
    return [_schema_error(e) for e in errors]


def _answer(m: Message, pending: _Pending, where: str, row: Reporter) -> None:
    if m.tool_call_id is not None:
        if not pending.take("id", m.tool_call_id):
            row.error(f"{where}.tool_call_id", "unmatched_tool_result",
                      f"tool_call_id {m.tool_call_id!r} matches no earlier call waiting for its "
                      "result; use the id of the assistant's tool call it answers")
    elif m.name is not None:
        if not pending.take("name", m.name):
            row.error(f"{where}.name", "unmatched_tool_result",
                      f"the result of {m.name!r} answers no earlier call of it; remove the turn "
                      "or add the call")
    elif not pending.take(None, None):  # ShareGPT observations answer the calls in order
        row.error(where, "unmatched_tool_result",
                  "this tool result answers no earlier call (no call is waiting for a result); "
                  "remove the turn or add the assistant's call before it")


def _unanswered(pending: _Pending, before: str, row: Reporter) -> None:
    for call, at in pending.calls.values():
        row.error(at, "unanswered_call",
                  f"the call to {call.name!r} gets no result before {before}; add the tool "
                  "turn with its result, or remove the call")


def open_calls(messages: Sequence[Message]) -> int:
    """Calls at the end of a conversation that no result follows (the row ends on them)."""
    last_call = max((i for i, m in enumerate(messages) if m.tool_calls), default=None)
    if last_call is None:
        return 0
    answered = sum(1 for m in messages[last_call + 1:] if m.role == "tool")
    return max(len(messages[last_call].tool_calls) - answered, 0)
