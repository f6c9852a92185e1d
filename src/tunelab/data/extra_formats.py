"""Two more row shapes, classification tables and self-instruct tasks, and HH transcripts.

===============  ==========================================================================
format           row shape
===============  ==========================================================================
classification   ``{"label", <text>, ...}``: a ``label`` and a text column (``text``,
                 ``sentence``, ``content``, ...); the text is the user turn, the label the
                 answer; other columns are kept, not read
self_instruct    ``{"instruction", "instances": [{"input", "output"}, ...]}``: the first
                 instance becomes the example; more instances are reported, not read
===============  ==========================================================================

Preference pairs are read by ``tunelab.data.pairs``; the HH-RLHF transcripts it reads
(turns marked ``\\n\\nHuman:`` / ``\\n\\nAssistant:``) are split here (``split_pair``,
``hh_turns``).

Choices worth knowing:

* classification keeps the label in ``Example.meta["label"]`` too (as the ticket-routing
  task does), so profiles and evaluators find it without parsing the answer. A row with
  several text columns reads the first of ``TEXT_KEYS`` (``text_key``); the others stay in
  ``meta``, unread (``load`` reports them as unused columns).
* An HH pair's prompt is cut at the last ``Assistant:`` marker that both transcripts
  share, not at the last marker of each: an answer can itself hold a marker, and a naive
  split then gives two different prompts (reported as ``prompt_mismatch``).
* self_instruct yields one example per row, from the first instance, because every
  other format maps one row to one example and findings point at one line; a row with
  more instances gets an ``extra_instances`` warning. The shared sets (Alpaca seed
  tasks, self-instruct user-oriented instructions) have exactly one instance per row.

``tunelab.data.formats`` detects these shapes and dispatches to the builders here; this
module knows nothing of files, and reports problems through the row collector it is
handed (``error``, ``warning`` and ``missing`` methods), never by raising.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from tunelab.data.example import Message
from tunelab.data.findings import show_value, type_name

LABEL_KEY = "label"
# Text columns of classification tables, in order of preference when several are present.
TEXT_KEYS = ("text", "sentence", "content", "review", "document", "input")

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_MARKER = re.compile(r"\n\n(Human|Assistant):")

SHAPES = {
    "classification": '{"text": "...", "label": "..."}',
    "self_instruct": '{"instruction": "...", "instances": [{"input": "", "output": "..."}]}',
}

# The keys each format needs, one tuple of accepted names per key (see ``formats.NEEDED``).
NEEDED = {
    "classification": ((LABEL_KEY,), TEXT_KEYS),
    "self_instruct": (("instruction",), ("instances",)),
}

# Every key each format reads, needed or optional (see ``formats.READS``); a classification
# row reads the label and one text column, the one ``text_key`` picks.
READS = {
    "classification": (LABEL_KEY, *TEXT_KEYS),
    "self_instruct": ("instruction", "instances"),
}

Built = tuple[set, list[Message], "str | None"]


def detect_extra(obj: dict) -> str | None:
    """The format of a row among the two here, judged by its keys (``None`` if none fits).

    ``self_instruct`` needs ``instruction`` and ``instances``; ``classification`` here needs exactly two columns,
    one of them ``label`` and the other holding a string (a label + text table whose text
    column has a name not in ``TEXT_KEYS``). A ``label`` with a column of ``TEXT_KEYS`` is
    recognised earlier, by ``formats.detect_format``, whatever other columns the row has.
    """
    if "instruction" in obj and "instances" in obj:
        return "self_instruct"
    if len(obj) == 2 and LABEL_KEY in obj:
        other = next(k for k in obj if k != LABEL_KEY)
        if isinstance(obj[other], str):
            return "classification"
    return None


def _string(obj: dict, key: str, row: Any, field: str | None = None) -> str | None:
    value = obj.get(key)
    if not isinstance(value, str):
        row.error(field or key, "not_string",
                  f"{key} must be a string, got {type_name(value)} {show_value(value)}")
        return None
    return value


def text_key(keys: Collection[str]) -> str | None:
    """The column a classification row takes its text from.

    Args:
        keys: the keys of a row (the row itself will do), or the columns of a table.

    Returns:
        The first of ``TEXT_KEYS`` among ``keys``; else the one key besides ``label`` when
        there is exactly one; else ``None``.
    """
    for key in TEXT_KEYS:  # a loop, not next(genexpr): this runs once per row of big tables
        if key in keys:
            return key
    others = [k for k in keys if k != LABEL_KEY]
    return others[0] if len(others) == 1 else None


def classification(obj: dict, row: Any) -> Built:
    """A text and its label: the user turn is the text, the assistant turn the label."""
    column = text_key(obj)
    if column is None:
        row.missing(obj, "text", "classification",
                    f"the text to classify; one of {', '.join(TEXT_KEYS)}")
    if LABEL_KEY not in obj:
        row.missing(obj, LABEL_KEY, "classification", "the class of the text")
    if column is None or LABEL_KEY not in obj:
        return {LABEL_KEY}, [], None
    used = {column}  # the label stays in meta as given
    text = _string(obj, column, row)
    label = obj[LABEL_KEY]
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        label = str(label)  # JSON labels may be numbers; the answer is their text
    if not isinstance(label, str):
        row.error(LABEL_KEY, "not_string",
                  f"label must be a string or a number, got {type_name(label)} "
                  f"{show_value(label)}")
        return used, [], None
    if not label.strip():
        row.error(LABEL_KEY, "empty_content",
                  "the label is empty, so the row teaches nothing; fill it in or remove the row")
    if text is not None and not text.strip():
        row.warning(column, "empty_content",
                    f"{column} is empty, so the label has nothing to classify; write the "
                    "text or remove the row")
    if text is None:
        return used, [], None
    return used, [Message("user", text), Message("assistant", label)], None


def split_pair(chosen: str, rejected: str) -> tuple[int, bool]:
    """Where the shared prompt of two HH transcripts ends, and whether a naive split disagrees.

    Args:
        chosen: the preferred transcript.
        rejected: the other transcript.

    Returns:
        ``(cut, naive_mismatch)``: ``cut`` is the index in both strings of the last
        ``\\n\\nAssistant:`` marker that lies wholly inside their common prefix (-1 when
        there is none); ``naive_mismatch`` is whether cutting each at its own last marker
        gives two different prompts.
    """
    limit = min(len(chosen), len(rejected))
    common = 0
    step = 256  # compare in blocks: transcripts share long prefixes
    while common < limit:
        end = min(common + step, limit)
        if chosen[common:end] == rejected[common:end]:
            common = end
            continue
        while chosen[common] == rejected[common]:
            common += 1
        break
    cut = chosen.rfind(ASSISTANT, 0, common)
    naive = chosen.rsplit(ASSISTANT, 1)[0] != rejected.rsplit(ASSISTANT, 1)[0]
    return cut, naive


def hh_turns(text: str, field: str, row: Any) -> list[Message] | None:
    """The turns of an HH prompt; earlier assistant turns get weight 0 (not trained).

    ``None`` (with an error on ``field``) when the text does not start with a marker.
    """
    if not text.strip():
        return []
    if text.startswith(HUMAN[2:]):  # "Human: ..." without the leading blank line
        text = "\n\n" + text
    if not text.startswith(HUMAN):
        row.error(field, "bad_transcript",
                  f"the transcript starts with {show_value(text[:30])}, not '\\n\\nHuman:'; "
                  "mark every turn with '\\n\\nHuman:' or '\\n\\nAssistant:'")
        return None
    parts = _MARKER.split(text)  # ['', 'Human', ' text', 'Assistant', ' text', ...]
    messages = []
    for i in range(1, len(parts), 2):
        role = "user" if parts[i] == "Human" else "assistant"
        content = parts[i + 1].strip()
        if not content:
            row.warning(field, "empty_content",
                        f"turn {i // 2 + 1} of the prompt ({parts[i]}) is empty; write its "
                        "text or remove the turn")
        messages.append(Message(role, content, 0.0 if role == "assistant" else None))
    return messages


def self_instruct(obj: dict, row: Any) -> Built:
    """An instruction with nested instances; the first instance becomes the example."""
    used = {"instruction", "instances"}
    for key, what in (("instruction", "the task for the model"),
                      ("instances", "a list of {input, output} objects")):
        if key not in obj:
            row.missing(obj, key, "self_instruct", what)
    if "instruction" not in obj or "instances" not in obj:
        return used, [], None
    instruction = _string(obj, "instruction", row)
    instances = obj["instances"]
    if isinstance(instances, str):  # CSV, TSV and Parquet cells carry lists as JSON text
        try:
            instances = json.loads(instances)
        except (ValueError, RecursionError):
            pass
    if not isinstance(instances, list) or not instances:
        what = "an empty list" if instances == [] else f"{type_name(instances)} {show_value(instances)}"
        row.error("instances", "instances_not_list",
                  f"instances must be a non-empty list of {{input, output}} objects, got {what}")
        return used, [], None
    first = instances[0]
    if not isinstance(first, dict):
        row.error("instances[0]", "row_not_object",
                  f"each instance must be an object like {{'input': ..., 'output': ...}}, got "
                  f"{type_name(first)} {show_value(first)}")
        return used, [], None
    if len(instances) > 1:
        row.warning("instances", "extra_instances",
                    f"the row has {len(instances)} instances and only the first is read (one "
                    "example per row); put the others in rows of their own to train on them")
    if "output" not in first:
        row.error("instances[0].output", "missing_field",
                  "the instance has no 'output' (the answer to learn); add it")
        return used, [], None
    output = _string(first, "output", row, "instances[0].output")
    extra = first.get("input")
    if extra is not None and not isinstance(extra, str):
        row.error("instances[0].input", "not_string",
                  f"input must be a string, got {type_name(extra)} {show_value(extra)}")
        return used, [], None
    if output is not None and not output.strip():
        row.error("instances[0].output", "empty_content",
                  "the output is empty, so the row would teach nothing; write the answer or "
                  "remove the row")
    if instruction is None or output is None:
        return used, [], None
    prompt = instruction + "\n\n" + extra if extra and extra.strip() else instruction
    return used, [Message("user", prompt), Message("assistant", output)], None


BUILDERS = {"classification": classification, "self_instruct": self_instruct}
