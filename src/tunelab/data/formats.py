"""The input formats a row can be in, and turning one row into an ``Example``.

=================  ==========================================================================
format             row shape
=================  ==========================================================================
chat               ``{"messages": [{"role", "content", "weight"?}, ...], "tools"?}`` (OpenAI
                   style; tool calls, results and content parts: ``tools``)
alpaca             ``{"instruction", "input"?, "output" | "response", "system"?}``
prompt_completion  ``{"prompt", "completion"}``
sharegpt           ``{"conversations": [{"from", "value", "weight"?}, ...], "system"?,
                   "tools"?}`` (``function_call`` and ``observation`` turns: ``tools``)
classification     ``{"label", "text" | "sentence" | ...}`` (a label + text table, other
                   columns allowed); see ``extra_formats``
text               ``{"text"}`` without a ``label``: every token is trained
preference         ``{"chosen", "rejected", ...}`` or ``{"input", "preferred_output",
                   "non_preferred_output"}``: preference pairs in five shapes (HH-RLHF,
                   TRL, OpenAI DPO, LLaMA-Factory); see ``pairs``
self_instruct      ``{"instruction", "instances": [...]}``; see ``extra_formats``
=================  ==========================================================================

Detection goes down this table and takes the first format whose keys a row has (a
``conversations`` row with ``chosen`` and ``rejected`` is a LLaMA-Factory pair, not
sharegpt), so a ``text`` column beside a ``label`` makes a classification table, the
most common shape of one, unless the format is given (``format: text``). A row with a key of another
format (``instruction``, ``prompt``, ``chosen``, ...) is never taken for classification.

Fields a format does not read are kept in ``Example.meta``; ``READS`` lists the keys each
format reads, and ``load`` reports the others once per file (``unused_message``). In CSV,
TSV and Parquet cells ``messages`` and ``conversations`` may hold the list as JSON text.
Problems come back as findings, never as exceptions; a row that fits no format, or a
field that every row lacks, is explained by the format that comes closest and the keys
it lacks (``closest_format``). This module knows nothing of files and lines beyond the ``source``
and ``line`` it is handed, nor of tokenizers and templates.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from tunelab.data import extra_formats, pairs
from tunelab.data.example import (
    ROLES,
    SHAREGPT_CALL,
    SHAREGPT_ROLES,
    Example,
    Message,
    ToolCall,
    chat_role,
    sharegpt_role,
)
from tunelab.data.findings import ERROR, WARNING, Finding, show_value, type_name
from tunelab.data.tools import (
    check_conversation,
    join_parts,
    read_legacy_call,
    read_openai_calls,
    read_sharegpt_calls,
    read_tools,
)

FORMATS = ("chat", "alpaca", "prompt_completion", "sharegpt", "text",
           "classification", "preference", "self_instruct")

# What a row of each format looks like, quoted in messages about rows of the wrong shape.
SHAPES = {
    "chat": '{"messages": [{"role": "user", "content": "..."}, '
            '{"role": "assistant", "content": "..."}]}',
    "alpaca": '{"instruction": "...", "input": "", "output": "..."}',
    "prompt_completion": '{"prompt": "...", "completion": "..."}',
    "sharegpt": '{"conversations": [{"from": "human", "value": "..."}, '
                '{"from": "gpt", "value": "..."}]}',
    "text": '{"text": "..."}',
    **extra_formats.SHAPES,
    **pairs.SHAPES,
}

# The keys each format needs, one tuple of accepted names per key (alpaca takes 'output'
# or its alias 'response'): what a row that fits no format is measured against.
NEEDED: dict[str, tuple[tuple[str, ...], ...]] = {
    "chat": (("messages",),),
    "alpaca": (("instruction",), ("output", "response")),
    "prompt_completion": (("prompt",), ("completion",)),
    "sharegpt": (("conversations",),),
    "text": (("text",),),
    **extra_formats.NEEDED,
    **pairs.NEEDED,
}

# Every key each format reads, needed or optional: a key outside it is kept in meta,
# unread, and reported once per file (a classification row reads one text column only).
READS: dict[str, tuple[str, ...]] = {
    "chat": ("messages", "tools", "functions"),
    "alpaca": ("instruction", "input", "output", "response", "system"),
    "prompt_completion": ("prompt", "completion"),
    "sharegpt": ("conversations", "system", "tools"),
    "text": ("text",),
    **extra_formats.READS,
    **pairs.READS,
}

# Keys that mark a row as another format: a label + text row holding one of them is not
# taken for a classification table (an alpaca row may hold 'input', a text column name).
_NOT_CLASSIFICATION = frozenset(
    name for fmt, needs in NEEDED.items() if fmt not in ("classification", "text")
    for names in needs for name in names)

# How ``detect_format`` recognises each format, for a row that fits none.
DETECTED_BY = ("chat (messages), alpaca (instruction, output), prompt_completion (prompt, "
               "completion), sharegpt (conversations), classification (label and one of "
               f"{', '.join(extra_formats.TEXT_KEYS)}, other columns allowed; or "
               "label and one other column holding text), text (text), preference (chosen, "
               "rejected; or preferred_output, non_preferred_output), self_instruct (instruction, instances)")

# Key names listed in a message before "and N more": tables can have hundreds of columns.
_NAMES_SHOWN = 12
# difflib similarity at which a key is taken for a misspelling: 'message' for 'messages'
# (0.93), 'ouput' for 'output' (0.91), but not 'context' for 'content' (0.86).
_CLOSE = 0.88


def detect_format(obj: dict) -> str | None:
    """The format a row is in, judged by its keys.

    Args:
        obj: one parsed row.

    Returns:
        ``chat`` (``messages``), ``alpaca`` (``instruction`` with ``output`` or
        ``response``), ``prompt_completion`` (``prompt`` and ``completion``), ``sharegpt``
        (``conversations``), ``classification`` (``label`` and a column of
        ``extra_formats.TEXT_KEYS``, whatever else the row holds, unless a key of another
        format is there), ``text`` (``text``), checked in that order (a ``sharegpt``
        row with ``chosen`` and ``rejected`` is ``preference``), then ``preference``
        (``pairs.is_pair``), ``self_instruct`` and ``classification`` of a two-column table
        (``extra_formats.detect_extra``); ``None`` when no format fits or ``obj`` is not
        a dict.
    """
    if not isinstance(obj, dict):
        return None
    if "messages" in obj:
        return "chat"
    if "conversations" in obj and pairs.is_pair(obj):
        return "preference"  # LLaMA-Factory's pairs, before sharegpt
    if "instruction" in obj and ("output" in obj or "response" in obj):
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    if "conversations" in obj:
        return "sharegpt"
    if extra_formats.LABEL_KEY in obj and _NOT_CLASSIFICATION.isdisjoint(obj) \
            and any(key in obj for key in extra_formats.TEXT_KEYS):
        return "classification"  # before text: `text` + `label` is the common table
    if "text" in obj:
        return "text"
    if pairs.is_pair(obj):
        return "preference"
    return extra_formats.detect_extra(obj)


def reads(fmt: str, keys: Collection[str]) -> frozenset[str]:
    """The keys among ``keys`` that a row of ``fmt`` reads (the rest stay in ``meta``, unread).

    Args:
        fmt: one of ``FORMATS``.
        keys: the keys of a row (the row itself will do), or the columns of a table.

    Returns:
        The keys of ``READS[fmt]`` found in ``keys``; for classification the label and
        the one text column ``extra_formats.text_key`` picks.
    """
    read: tuple[str | None, ...] = READS.get(fmt, ())
    if fmt == "classification":
        read = (extra_formats.LABEL_KEY, extra_formats.text_key(keys))
    return frozenset(key for key in read if key is not None and key in keys)


@dataclass(frozen=True)
class Closest:
    """The format that a set of keys comes closest to, and what it lacks.

    Args:
        format: one of ``FORMATS``.
        lacking: the keys the format needs that no key matches exactly, each as the
            tuple of names it accepts (``("output", "response")``); empty when every key is
            there and only the automatic detection passed the format over.
        renames: ``(key, name)`` pairs: a key that looks like a needed name misspelt.
    """

    format: str
    lacking: tuple[tuple[str, ...], ...]
    renames: tuple[tuple[str, str], ...]


def closest_format(keys: Iterable[str]) -> Closest | None:
    """The format whose needed keys the given keys match best.

    A needed key counts 1 when present, 1/2 when a key looks like it misspelt (another
    case, a plural, a word of a longer name such as ``output_text``); ties go to the
    format with the larger share of its keys present, then to the first in ``FORMATS``.

    Args:
        keys: the keys of a row, or the columns of a table.

    Returns:
        The closest format, or ``None`` when no key matches or resembles any needed one.
    """
    keys = list(keys)
    present = set(keys)
    best, best_rank = None, None
    for order, fmt in enumerate(FORMATS):
        score, lacking, renames = 0.0, [], []
        for names in NEEDED[fmt]:
            if present.intersection(names):
                score += 1
                continue
            lacking.append(names)
            rename = _rename(names, keys)
            if rename is not None:
                score += 0.5
                renames.append(rename)
        rank = (score, score / len(NEEDED[fmt]), -order)
        if score and (best_rank is None or rank > best_rank):
            best, best_rank = Closest(fmt, tuple(lacking), tuple(renames)), rank
    return best


def no_format_message(keys: Iterable[str], noun: str = "key", rows: int = 1) -> str:
    """What is wrong with keys that fit no format, naming the closest format and what it lacks.

    Args:
        keys: the keys of the row, or of every row when ``rows`` > 1.
        noun: ``"key"`` for JSON rows, ``"column"`` for tables.
        rows: how many rows share the problem.

    Returns:
        The message of an ``unknown_format`` finding.
    """
    keys = list(keys)
    where = (f"the {noun}s {_names(keys)}" if rows == 1
             else f"the {noun}s of all {rows:,} rows ({_names(keys)})")
    closest = closest_format(keys)
    if closest is None:
        return (f"no format fits {where}, and none shares a {noun} with them; name the "
                f"{noun}s as one format has them: {DETECTED_BY}")
    fmt = closest.format
    if not closest.lacking:
        return (f"no format is detected from {where}, though they hold what {fmt} needs; "
                f"set the format to {fmt!r}")
    fixes = [f"rename {key!r} to {name!r}" for key, name in closest.renames]
    renamed = {name for _, name in closest.renames}
    unfixed = [names for names in closest.lacking if not renamed.intersection(names)]
    if unfixed:  # named, since a rename may come before
        names = " and ".join(repr(names[0]) for names in unfixed)
        fixes.append(f"rename the {noun} that holds {names}, or add it" if len(unfixed) == 1
                     else f"rename the {noun}s that hold {names}, or add them")
    lacks = " and ".join(_alternatives(names) for names in closest.lacking)
    return (f"no format fits {where}; the closest is {fmt}, which lacks {lacks}: "
            f"{'; '.join(fixes)} ({_a(fmt)} row looks like {SHAPES[fmt]})")


def missing_everywhere(fmt: str, key: str, keys: Iterable[str], rows: int,
                       noun: str = "key", sample: dict | None = None) -> str:
    """The message for a field that every row of a file lacks: one problem, said once.

    Args:
        fmt: the format the rows are read as.
        key: the needed field, as the per-row finding names it.
        keys: the keys of the rows (the columns of a table).
        rows: how many rows lack it (all of them).
        noun: ``"key"`` for JSON rows, ``"column"`` for tables.
        sample: a row, to say which other format the rows look like, if any.

    Returns:
        The message of the file-level finding.
    """
    keys = list(keys)
    names = next((n for n in NEEDED.get(fmt, ()) if key in n), (key,))
    what = (f"all {rows:,} rows lack {_alternatives(names)}, which {fmt} rows need; the "
            f"{noun}s are {_names(keys)}")
    rename = _rename(names, keys)
    looks = detect_format(sample) if sample is not None else None
    if rename is not None:
        fix = f"rename {rename[0]!r} to {rename[1]!r}"
    elif looks and looks != fmt:
        fix = f"the rows look like {looks}: load the file with format={looks!r}"
    else:
        fix = (f"rename the {noun} that holds it to {key!r}, or add it ({_a(fmt)} row looks "
               f"like {SHAPES[fmt]})")
    return f"{what}; {fix}"


def unused_message(fmt: str, unused: Iterable[str], keys: Iterable[str], noun: str = "key",
                   sample: dict | None = None) -> str:
    """The message for keys that rows of ``fmt`` do not read, said once for a file.

    A key that another format would read is named with that format, when the keys hold
    everything that format needs (a format that cannot read the file is no advice): the
    format the rows look like first, with ``set format: ...`` (the format was given),
    then the others in ``FORMATS`` order.

    Args:
        fmt: the format the rows are read as.
        unused: the keys no row read, in file order.
        keys: the keys of the rows (the columns of a table).
        noun: ``"key"`` for JSON rows, ``"column"`` for tables.
        sample: a row, to say which format the rows look like, if any.

    Returns:
        The message of the ``unused_columns`` finding, e.g. ``column 'label' is not used
        by the text format (kept as metadata for slices; classification would use 'label':
        set format: classification)``.
    """
    unused, keys = list(unused), list(keys)
    present = set(keys)
    looks = detect_format(sample) if sample is not None else None
    fitting = [f for f in FORMATS if f != fmt
               and all(present.intersection(names) for names in NEEDED[f])]
    fitting.sort(key=lambda f: f != looks)  # stable: FORMATS order after the looked-like one
    wanted: dict[str, list[str]] = {}
    for key in unused:
        other = next((f for f in fitting if key in reads(f, keys)), None)
        if other is not None:
            wanted.setdefault(other, []).append(key)
    uses = "".join(f"; {other} would use {_names(cols)}"
                   + (f": set format: {other}" if other == looks else "")
                   for other, cols in wanted.items())
    many = len(unused) > 1
    return (f"{noun}{'s' if many else ''} {_names(unused)} {'are' if many else 'is'} not "
            f"used by the {fmt} format (kept as metadata for slices{uses})")


def _a(fmt: str) -> str:
    """``a chat`` or ``an alpaca``: the format name with its article."""
    return f"{'an' if fmt[:1] in 'aeiou' else 'a'} {fmt}"


def _names(keys: list[str]) -> str:
    """Keys quoted for a message, the first few of many: ``'a', 'b' and 3 more``."""
    if not keys:
        return "none"
    shown = ", ".join(map(repr, keys[:_NAMES_SHOWN]))
    more = len(keys) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _alternatives(names: tuple[str, ...]) -> str:
    """``'output' (or 'response')``: a needed key with the other names it may have."""
    first, rest = repr(names[0]), ", ".join(map(repr, names[1:]))
    return f"{first} (or {rest})" if rest else first


def _rename(names: tuple[str, ...], keys: list[str]) -> tuple[str, str] | None:
    """``(key, name)`` when a key looks like one of ``names`` misspelt, else ``None``.

    Another case or padding (``Output``), a word of a longer name (``output_text``), or a
    close spelling (``message``, ``completions``) counts; an exact match does not.
    """
    for name in names:
        for key in keys:
            if key == name:
                continue
            low = key.strip().lower()
            if low == name or name in re.split(r"[\W_]+", low):
                return key, name
    for name in names:
        lowered = {key.strip().lower(): key for key in keys if key != name}
        close = difflib.get_close_matches(name, list(lowered), n=1, cutoff=_CLOSE)
        if close:
            return lowered[close[0]], name
    return None


def to_example(obj: object, fmt: str, source: str,
               line: int) -> tuple[Example | None, list[Finding]]:
    """Turn one row into an ``Example`` in the given format, collecting every problem.

    Args:
        obj: one parsed row.
        fmt: one of ``FORMATS``.
        source: the file path as the user gave it, for findings and the example.
        line: the row's 1-based line, for findings and the example.

    Returns:
        ``(example, findings)``: the example is ``None`` when any finding is an error;
        warnings come with a built example.
    """
    row = _Row(source, line)
    if fmt not in FORMATS:
        row.error(None, "unknown_format",
                  f"format {fmt!r} is not one of {', '.join(FORMATS)}; pick one of them or 'auto'")
        return None, row.findings
    if not isinstance(obj, dict):
        row.error(None, "row_not_object",
                  f"the row is {type_name(obj)}, not an object; write it as {SHAPES[fmt]}")
        return None, row.findings
    text = rejected = None
    if fmt == "preference":  # the third part is the rejected answer, not a text
        used, messages, rejected = pairs.preference(obj, row)
    else:
        used, messages, text = _BUILDERS[fmt](obj, row)
    if any(f.severity == ERROR for f in row.findings):
        return None, row.findings
    meta = {k: v for k, v in obj.items() if k not in used}
    example = Example(messages=messages, text=text, source=source, line=line, meta=meta,
                      rejected=rejected, tools=row.tools)
    return example, row.findings


class _Row:
    """Collects the findings of one row."""

    def __init__(self, source: str, line: int) -> None:
        self.source = source
        self.line = line
        self.findings: list[Finding] = []
        self.tools: tuple[dict, ...] = ()  # the row's tool declarations, once read

    def error(self, field: str | None, code: str, message: str) -> None:
        self.findings.append(Finding(self.source, self.line, field, code, message, ERROR))

    def warning(self, field: str | None, code: str, message: str) -> None:
        self.findings.append(Finding(self.source, self.line, field, code, message, WARNING))

    def missing(self, obj: dict, key: str, fmt: str, what: str) -> None:
        """A field the format needs is absent; say which key may be it misspelt, or which
        format the row looks like."""
        keys = _names(list(obj))
        looks = detect_format(obj)
        names = next((n for n in NEEDED.get(fmt, ()) if key in n), (key,))
        rename = _rename(names, list(obj))
        if rename is not None:
            other = f"; {rename[0]!r} looks like it: rename it to {rename[1]!r}"
        elif looks and looks != fmt:
            other = f"; this row looks like {looks}: load the file with format={looks!r}"
        else:
            other = f"; {_a(fmt)} row looks like {SHAPES[fmt]}"
        code = "missing_messages" if key == "messages" else "missing_field"
        self.error(key, code, f"the row has no {key!r} ({what}); its keys are {keys}{other}")


Built = tuple[set, list[Message], "str | None"]


def _string(obj: dict, key: str, row: _Row, optional: bool = False) -> str | None:
    """A string field; ``None`` (with an error unless optional) when absent or not a string."""
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        row.error(key, "not_string",
                  f"{key} must be a string, got {type_name(value)} {show_value(value)}")
        return None
    return value


def _answer(value: str | None, field: str, row: _Row) -> None:
    """The trained text must not be empty: nothing would be learned from the row."""
    if value is not None and not value.strip():
        row.error(field, "empty_content",
                  f"{field} is empty, so the row would teach nothing; write the answer or "
                  "remove the row")


def _chat(obj: dict, row: _Row) -> Built:
    used = {"messages", "tools", "functions"}
    if "messages" not in obj:
        row.missing(obj, "messages", "chat", "a list of {role, content} objects")
        return used, [], None
    tools = _declared(obj, ("tools", "functions"), row)
    turns = _list_field(obj["messages"], "messages", "messages_not_list", row)
    messages, wheres, calls = _turns(turns, "messages", ("role", "content"), chat_role, row)
    if tools is not None and turns is not None and len(messages) == len(turns):
        # Only when every turn was read: a turn left out (its call malformed, say) would
        # make the turns after it look unanswered or answering nothing.
        check_conversation(tools, messages, wheres, row, _tools_field(obj, ("tools", "functions")),
                           calls)
    return used, messages, None


def _sharegpt(obj: dict, row: _Row) -> Built:
    used = {"conversations", "system", "tools"}
    if "conversations" not in obj:
        row.missing(obj, "conversations", "sharegpt", "a list of {from, value} objects")
        return used, [], None
    system = _string(obj, "system", row, optional=True)
    tools = _declared(obj, ("tools",), row)
    turns = _list_field(obj["conversations"], "conversations", "conversations_not_list", row)
    messages, wheres, calls = _turns(turns, "conversations", ("from", "value"), sharegpt_role, row)
    if tools is not None and turns is not None and len(messages) == len(turns):
        check_conversation(tools, messages, wheres, row, "tools", calls)
    if system and system.strip():
        messages.insert(0, Message("system", system))
    return used, messages, None


def _declared(obj: dict, keys: tuple[str, ...], row: _Row) -> tuple[dict, ...] | None:
    """The row's tool declarations (``tools``, or OpenAI's older ``functions``); None when
    they are malformed (reported)."""
    given = [k for k in keys if obj.get(k) not in (None, "", [])]
    if len(given) > 1:
        row.error(given[1], "conflicting_fields",
                  f"the row declares functions in both {given[0]!r} and {given[1]!r}; keep one")
        return None
    tools = read_tools(obj[given[0]], given[0], row) if given else ()
    row.tools = tools or ()
    return tools


def _tools_field(obj: dict, keys: tuple[str, ...]) -> str:
    return next((k for k in keys if obj.get(k) not in (None, "", [])), keys[0])


def _alpaca(obj: dict, row: _Row) -> Built:
    used = {"instruction", "input", "output", "response", "system"}
    if "instruction" not in obj:
        row.missing(obj, "instruction", "alpaca", "the task for the model")
    if "output" not in obj and "response" not in obj:
        row.missing(obj, "output", "alpaca", "the answer to learn; 'response' is accepted too")
    if "output" in obj and "response" in obj and obj["output"] != obj["response"]:
        row.error("response", "conflicting_fields",
                  "the row has both 'output' and its alias 'response' with different values; "
                  "keep one of them")
    if any(f.severity == ERROR for f in row.findings):
        return used, [], None
    key = "output" if "output" in obj else "response"
    instruction = _string(obj, "instruction", row)
    extra = _string(obj, "input", row, optional=True)
    output = _string(obj, key, row)
    system = _string(obj, "system", row, optional=True)
    _answer(output, key, row)
    if instruction is None or output is None:
        return used, [], None
    prompt = instruction + "\n\n" + extra if extra and extra.strip() else instruction
    if not prompt.strip():
        row.warning("instruction", "empty_content",
                    "instruction and input are both empty, so the answer has no question; "
                    "write the instruction")
    messages = [Message("user", prompt), Message("assistant", output)]
    if system and system.strip():
        messages.insert(0, Message("system", system))
    return used, messages, None


def _prompt_completion(obj: dict, row: _Row) -> Built:
    used = {"prompt", "completion"}
    for key, what in (("prompt", "the input"), ("completion", "the text to learn")):
        if key not in obj:
            row.missing(obj, key, "prompt_completion", what)
    if any(f.severity == ERROR for f in row.findings):
        return used, [], None
    prompt = _string(obj, "prompt", row)
    completion = _string(obj, "completion", row)
    _answer(completion, "completion", row)
    if prompt is None or completion is None:
        return used, [], None
    return used, [Message("user", prompt), Message("assistant", completion)], None


def _text(obj: dict, row: _Row) -> Built:
    if "text" not in obj:
        row.missing(obj, "text", "text", "the document to learn")
        return {"text"}, [], None
    text = _string(obj, "text", row)
    _answer(text, "text", row)
    return {"text"}, [], text


_BUILDERS: dict[str, Callable[[dict, _Row], Built]] = {
    "chat": _chat, "alpaca": _alpaca, "prompt_completion": _prompt_completion,
    "sharegpt": _sharegpt, "text": _text,
    **extra_formats.BUILDERS,
}


def _list_field(value: object, field: str, code: str, row: _Row) -> list | None:
    """A list of turns; CSV, TSV and Parquet cells may carry it as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            row.error(field, code, f"{field} must be a list of turns, got a string "
                      f"{show_value(value)} that is not a JSON list (CSV, TSV and Parquet "
                      "cells may hold the list as JSON text)")
            return None
    if not isinstance(value, list):
        row.error(field, code, f"{field} must be a list of turns, got {type_name(value)} "
                  f"{show_value(value)}")
        return None
    return value




def _turns(turns: list | None, field: str, keys: tuple[str, str],
           role_of: Callable[[object], str | None], row: _Row,
           ) -> tuple[list[Message], list[str], list[list[str]]]:
    """Parse the turns of a conversation; report every bad turn and a missing assistant.

    Returns:
        The turns read, each one's field (``messages[2]``) and the fields of its calls
        (``_call_fields``), for the tool checks.
    """
    if turns is None:
        return [], [], []
    role_key, content_key = keys
    sharegpt = role_of is sharegpt_role
    allowed = (role_key, content_key, "weight") + (() if sharegpt else _CHAT_TOOL_KEYS)
    messages: list[Message] = []
    wheres: list[str] = []
    call_fields: list[list[str]] = []
    roles: list[str | None] = []  # of every turn, even one whose content is bad
    roles_ok = True
    for i, turn in enumerate(turns):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            row.error(where, "message_not_object",
                      f"each turn must be an object like {{{role_key!r}: ..., "
                      f"{content_key!r}: ...}}, got {type_name(turn)} {show_value(turn)}")
            roles_ok = False
            continue
        result = not sharegpt and turn.get(role_key) in ("tool", "function")
        for key, value in turn.items():
            # Parquet pads absent keys with null; a result's call id and name are read
            # on tool turns only (OpenAI's `name` of a user is not read: it is an error).
            if value is not None and (key not in allowed
                                      or (key in _RESULT_KEYS and not result)):
                row.error(f"{where}.{key}", "unknown_key",
                          f"{key!r} is not read by this format (only {', '.join(allowed)}"
                          f"{'' if sharegpt else '; tool_call_id and name on tool turns only'}); "
                          "remove it")
        if sharegpt and isinstance(turn.get(role_key), str) \
                and turn[role_key].lower() == SHAREGPT_CALL:
            roles.append("assistant")
            message = _sharegpt_call(turn, where, content_key, row)
        else:
            role = _turn_role(turn, where, role_key, role_of, row)
            roles_ok = roles_ok and role is not None
            roles.append(role)
            message = _turn_message(turn, where, role_key, content_key, role, row)
        if message is not None:
            messages.append(message)
            wheres.append(where)
            call_fields.append(_call_fields(turn, where, content_key, len(message.tool_calls)))
    if not roles_ok:  # a misspelt role may be the assistant: no guesses about the rest
        return messages, wheres, call_fields
    if "assistant" not in roles:
        what = "is empty" if not turns else "has no assistant turn"
        row.error(field, "no_assistant",
                  f"the conversation {what}, so nothing would be trained; add the assistant "
                  "reply to learn, or remove the row")
    elif len(messages) == len(turns) and not any(_trained(m) for m in messages):
        row.warning(field, "nothing_trained",
                    "no turn is trained (the assistant turns have weight 0 and no turn has "
                    "weight 1), so the row teaches nothing; set weight 1 on a reply to learn")
    return messages, wheres, call_fields


def _call_fields(turn: dict, where: str, content_key: str, n: int) -> list[str]:
    """The field of each of a turn's ``n`` calls, as its reader names them in findings."""
    if turn.get("tool_calls") is not None:
        return [f"{where}.tool_calls[{j}].function" for j in range(n)]
    if turn.get("function_call") is not None:
        return [f"{where}.function_call"] * n
    value = turn.get(content_key)  # a ShareGPT function_call turn: JSON text of one or a list
    listed = isinstance(value, list) or (isinstance(value, str) and value.lstrip().startswith("["))
    return [f"{where}.{content_key}[{j}]" if listed else f"{where}.{content_key}" for j in range(n)]


# Keys an OpenAI chat message may carry beside role, content and weight: calls, a
# result's call id, the function's name (older ``function`` messages), the older call.
_CHAT_TOOL_KEYS = ("tool_calls", "tool_call_id", "name", "function_call")
_RESULT_KEYS = ("tool_call_id", "name")


def _turn_message(turn: dict, where: str, role_key: str, content_key: str, role: str | None,
                  row: _Row) -> Message | None:
    """One chat or ShareGPT turn as a message, its calls and result id read."""
    calls: tuple[ToolCall, ...] | None = ()
    # An empty list is no call (exports often write one): the turn is then read as text.
    given = [k for k in ("tool_calls", "function_call") if turn.get(k) not in (None, [])]
    calling = bool(given)
    if len(given) > 1:
        row.error(f"{where}.function_call", "conflicting_fields",
                  "the turn has both 'tool_calls' and the older 'function_call'; keep one")
        calls = None
    elif given == ["tool_calls"]:
        calls = read_openai_calls(turn["tool_calls"], f"{where}.tool_calls", row)
    elif given:
        calls = read_legacy_call(turn["function_call"], f"{where}.function_call", row)
    if calling and role not in (None, "assistant"):
        row.error(f"{where}.tool_calls", "bad_tool_call",
                  f"only assistant turns call tools; this turn's role is {role!r}")
    content = _turn_content(turn, where, content_key, role, row, calling=calling)
    weight = _weight(turn.get("weight"), f"{where}.weight", row)
    if role == "tool" and turn.get("weight") is not None:
        row.error(f"{where}.weight", "bad_weight",
                  "a tool result is never trained (it is the tool's output, not the model's); "
                  "remove its weight")
        weight = None
    ident, name = turn.get("tool_call_id"), turn.get("name")
    for key, value in (("tool_call_id", ident), ("name", name)):
        if value is not None and not isinstance(value, str):
            row.error(f"{where}.{key}", "not_string",
                      f"{key} must be a string, got {type_name(value)} {show_value(value)}")
            return None
    if role is None or content is None or calls is None:
        return None
    if role != "tool":
        ident = name = None
    return Message(role, content, weight, tuple(calls), ident, name)


def _sharegpt_call(turn: dict, where: str, content_key: str, row: _Row) -> Message | None:
    """A ShareGPT ``function_call`` turn: the assistant calling, as JSON text."""
    field = f"{where}.{content_key}"
    if content_key not in turn:
        row.error(field, "missing_content", f"the turn has no {content_key!r}; add the call as JSON")
        return None
    calls = read_sharegpt_calls(turn[content_key], field, row)
    weight = _weight(turn.get("weight"), f"{where}.weight", row)
    return None if calls is None else Message("assistant", "", weight, calls)


def _trained(message: Message) -> bool:
    if message.weight is None:
        return message.role == "assistant"
    return message.weight == 1


def _turn_role(turn: dict, where: str, key: str, role_of: Callable[[object], str | None],
               row: _Row) -> str | None:
    names = [*SHAREGPT_ROLES, SHAREGPT_CALL] if role_of is sharegpt_role else list(ROLES)
    if key not in turn:
        row.error(f"{where}.{key}", "missing_role",
                  f"the turn has no {key!r}; add one of {', '.join(names)}")
        return None
    raw = turn[key]
    role = role_of(raw)
    if role is None:
        close = (f" (did you mean {raw.lower()!r}?)"
                 if isinstance(raw, str) and role_of(raw.lower()) else "")
        row.error(f"{where}.{key}", "unknown_role",
                  f"{key} {show_value(raw)} is not one of {', '.join(names)}{close}; rename it")
    return role


def _turn_content(turn: dict, where: str, key: str, role: str | None, row: _Row,
                  calling: bool = False) -> str | None:
    field = f"{where}.{key}"
    if calling and turn.get(key) is None:
        return ""  # an assistant turn that only calls tools has no content
    if key not in turn:
        row.error(field, "missing_content", f"the turn has no {key!r}; add its text")
        return None
    content = turn[key]
    if isinstance(content, list):
        content = join_parts(content, field, row)
        if content is None:
            return None
    if not isinstance(content, str):
        row.error(field, "not_string",
                  f"{key} must be a string or a list of text parts, got {type_name(content)} "
                  f"{show_value(content)}")
        return None
    if not content.strip() and not calling:
        if role == "assistant":
            row.error(field, "empty_content",
                      "the assistant turn is empty, so it would teach an empty reply; write "
                      "the reply or remove the turn")
        elif role is not None:
            row.warning(field, "empty_content",
                        f"the {role} turn is empty; write its text or remove the turn")
    return content


def _weight(value: object, field: str, row: _Row) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return float(value)
    row.error(field, "bad_weight",
              f"weight {show_value(value)} must be 0 or 1 (1 trains on this turn, 0 does not); "
              "fix the value")
    return None
