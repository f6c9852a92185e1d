"""Preference pairs: one prompt, a preferred answer and a rejected one, in five shapes.

The ``preference`` format reads every shape below; ``formats.detect_format`` picks it for
a row holding ``chosen`` and ``rejected`` (beside anything but ``messages``), or
``preferred_output`` and ``non_preferred_output``.

==========================  ===================================================================
shape                       row
==========================  ===================================================================
HH-RLHF (Anthropic)         ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``:
                            two transcripts that differ in the last answer
TRL, standard               ``{"prompt": "...", "chosen": "...", "rejected": "..."}``
TRL, conversational         ``{"prompt": [messages], "chosen": [messages], "rejected": [messages]}``;
                            without ``prompt``, the shared first messages are the prompt
OpenAI DPO (and ``tunelab   ``{"input": {"messages": [...]}, "preferred_output": [{"role":
feedback export``)          "assistant", ...}], "non_preferred_output": [...]}``
LLaMA-Factory (ShareGPT)    ``{"conversations": [{"from", "value"}], "chosen": {"from": "gpt",
                            "value"}, "rejected": {...}, "system"?}``
==========================  ===================================================================

Every shape becomes one ``Example``: ``messages`` are the prompt turns then the preferred
answer (earlier assistant turns get weight 0, so supervised training on a pair file
learns the preferred answer only), and ``rejected`` holds the rejected answer; the
rejected side is also kept as given in ``meta`` (HH-RLHF: ``meta["rejected"]``). The
answers are single assistant turns: a shape whose answer is several messages is an error.
``TokenizedPair`` renders a pair for preference tuning with ``template.tokenize_example``,
the rendering supervised training uses, so its labels mark the answer tokens only.

This module knows nothing of files or of the other formats; it reports problems through
the row collector it is handed (``error``, ``warning``, ``missing``), never by raising,
except for the length policy (``DataError`` under ``overlength: error``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunelab.data.example import ROLES, SHAREGPT_ROLES, Example, Message, chat_role, sharegpt_role
from tunelab.data.extra_formats import ASSISTANT, HUMAN, hh_turns, split_pair
from tunelab.data.findings import show_value, type_name
from tunelab.data.length import LengthReport
from tunelab.data.template import TokenizedExample, tokenize_example
from tunelab.errors import DataError

SHAPES = {"preference": '{"prompt": "...", "chosen": "...", "rejected": "..."} (or HH-RLHF '
                        'transcripts, OpenAI DPO lines, LLaMA-Factory pairs)'}
NEEDED = {"preference": (("chosen",), ("rejected",))}
READS = {"preference": ("chosen", "rejected", "prompt", "conversations", "system", "input",
                        "preferred_output", "non_preferred_output")}

Built = tuple[set, list[Message], "str | None"]  # used keys, prompt + preferred answer, rejected


def is_pair(obj: dict) -> bool:
    """Whether a row's keys make it a preference pair (of any of the five shapes)."""
    return ("chosen" in obj and "rejected" in obj) or \
        ("preferred_output" in obj and "non_preferred_output" in obj)


def preference(obj: dict, row: Any) -> Built:
    """A pair of any shape: ``(used keys, prompt turns + preferred answer, rejected answer)``."""
    if "preferred_output" in obj or "non_preferred_output" in obj:
        return _openai(obj, row)
    for key, what in (("chosen", "the preferred answer"), ("rejected", "the answer to avoid")):
        if key not in obj:
            row.missing(obj, key, "preference", what)
    if "chosen" not in obj or "rejected" not in obj:
        return {"chosen", "prompt"}, [], None
    if "conversations" in obj:
        return _llamafactory(obj, row)
    if isinstance(obj["chosen"], list) or isinstance(obj.get("prompt"), list):
        return _trl_conversational(obj, row)
    return _strings(obj, row)


def _finish(used: set, prompt: list[Message] | None, answers: tuple[str | None, str | None],
            row: Any, fields: tuple[str, str]) -> Built:
    """Check the answers (empty, identical) and build the result; errors give no messages."""
    chosen, rejected = answers
    if chosen is not None and rejected is not None and not chosen.strip() and not rejected.strip():
        row.error(fields[0], "empty_content",
                  "both answers are empty, so the pair compares nothing; write the answers "
                  "or remove the row")
    else:
        # One empty side is a real choice (HH-RLHF harmless-base prefers saying nothing in
        # a few rows): it renders as the end-of-turn token alone, so the pair still teaches
        # replying against not replying. Said, never dropped.
        for field, answer in zip(fields, answers, strict=True):
            if answer is not None and not answer.strip():
                row.warning(field, "empty_content",
                            f"the final assistant turn of {field} is empty: the pair compares "
                            "a reply with ending the turn at once (and supervised training on "
                            "the preferred side learns that); write the answer or remove the "
                            "row if that is not meant")
    if chosen is not None and chosen == rejected and chosen.strip():
        row.warning(fields[1], "identical_pair",
                    "chosen and rejected are the same, so the pair shows no preference; "
                    "remove the row or fix one answer")
    if prompt is not None and prompt and not any(m.role == "user" for m in prompt):
        row.error(None, "no_prompt",
                  "the prompt has no user turn, so the answers answer nothing; add the user "
                  "message the answers reply to")
    if prompt is None or chosen is None or rejected is None:
        return used, [], None
    return used, [*prompt, Message("assistant", chosen.strip())], rejected.strip()


def _strings(obj: dict, row: Any) -> Built:
    """HH-RLHF transcripts, or TRL's standard ``prompt``/``chosen``/``rejected`` strings."""
    used = {"chosen", "prompt"}  # the rejected transcript stays in meta as given
    chosen, rejected = _string(obj, "chosen", row), _string(obj, "rejected", row)
    prompt = _string(obj, "prompt", row) if "prompt" in obj else None
    if chosen is None or rejected is None or ("prompt" in obj and prompt is None):
        return used, [], None
    if prompt is not None:
        turns = (hh_turns(prompt, "prompt", row) if prompt.startswith(HUMAN)
                 else [Message("user", prompt)])
        return _finish(used, turns, (chosen, rejected), row, ("chosen", "rejected"))
    cut, naive = split_pair(chosen, rejected)
    if cut < 0:
        row.error("chosen", "no_shared_prompt",
                  "chosen and rejected share no prompt ending in '\\n\\nAssistant:'; "
                  "write both as the same conversation followed by different answers")
        return used, [], None
    if naive:
        row.warning("chosen", "prompt_mismatch",
                    f"cut at each transcript's last 'Assistant:' the prompts differ (chosen "
                    f"has {chosen.count(ASSISTANT)} 'Assistant:' markers, rejected "
                    f"{rejected.count(ASSISTANT)}): an answer holds a turn marker; the pair "
                    f"is cut where they diverge, after turn {chosen.count(HUMAN, 0, cut) * 2 - 1}"
                    "; check that both answers are what you meant")
    start = cut + len(ASSISTANT)
    return _finish(used, hh_turns(chosen[:cut], "chosen", row),
                   (chosen[start:], rejected[start:]), row, ("chosen", "rejected"))


def _trl_conversational(obj: dict, row: Any) -> Built:
    """TRL's conversational pairs: lists of ``{role, content}`` messages."""
    used = {"chosen", "prompt"}
    chosen = _messages(obj["chosen"], "chosen", ("role", "content"), chat_role, row)
    rejected = _messages(obj["rejected"], "rejected", ("role", "content"), chat_role, row)
    if "prompt" in obj:
        prompt = _messages(obj["prompt"], "prompt", ("role", "content"), chat_role, row)
    elif chosen is not None and rejected is not None:  # implicit prompt: the shared turns
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    else:
        prompt = None
    answers = (_one_answer(chosen, "chosen", row), _one_answer(rejected, "rejected", row))
    return _finish(used, _unweighted(prompt), answers, row, ("chosen", "rejected"))


def _openai(obj: dict, row: Any) -> Built:
    """OpenAI's DPO line (and what ``tunelab feedback export`` writes)."""
    used = {"input", "preferred_output"}  # the non-preferred output stays in meta as given
    missing = [k for k in ("input", "preferred_output", "non_preferred_output") if k not in obj]
    for key in missing:
        row.error(key, "missing_field",
                  f"the row has no {key!r}; an OpenAI DPO line looks like {{'input': "
                  "{'messages': [...]}, 'preferred_output': [{'role': 'assistant', 'content': "
                  "'...'}], 'non_preferred_output': [...]}")
    if missing:
        return used, [], None
    given = obj["input"]
    if isinstance(given, str):  # CSV, TSV and Parquet cells carry objects as JSON text
        given = _json(given)
    if not isinstance(given, dict) or "messages" not in given:
        row.error("input", "missing_messages",
                  f"input must be an object with 'messages' (a list of {{role, content}}), got "
                  f"{type_name(given)} {show_value(given)}")
        prompt = None
    else:
        prompt = _messages(given["messages"], "input.messages", ("role", "content"), chat_role, row)
    answers = tuple(_one_answer(_messages(obj[key], key, ("role", "content"), chat_role, row),
                                key, row) for key in ("preferred_output", "non_preferred_output"))
    return _finish(used, _unweighted(prompt), (answers[0], answers[1]), row,
                   ("preferred_output", "non_preferred_output"))


def _llamafactory(obj: dict, row: Any) -> Built:
    """LLaMA-Factory's ShareGPT pairs: ``conversations`` and one message each side."""
    used = {"conversations", "system", "chosen"}
    prompt = _messages(obj["conversations"], "conversations", ("from", "value"), sharegpt_role, row)
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        row.error("system", "not_string", f"system must be a string, got {type_name(system)}")
    elif system and system.strip() and prompt is not None:
        prompt.insert(0, Message("system", system))
    answers = []
    for key in ("chosen", "rejected"):
        value = obj[key]
        turns = _messages(value if isinstance(value, list) else [value], key, ("from", "value"),
                          sharegpt_role, row)
        answers.append(_one_answer(turns, key, row))
    return _finish(used, _unweighted(prompt), (answers[0], answers[1]), row, ("chosen", "rejected"))


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _string(obj: dict, key: str, row: Any) -> str | None:
    value = obj.get(key)
    if not isinstance(value, str):
        row.error(key, "not_string", f"{key} must be a string, got {type_name(value)} {show_value(value)}")
        return None
    return value




def _messages(value: object, field: str, keys: tuple[str, str],
              role_of: Callable[[object], str | None], row: Any) -> list[Message] | None:
    """A list of turns; every bad turn is reported; ``None`` when any is bad."""
    if isinstance(value, str):
        value = _json(value)
    if not isinstance(value, list):
        row.error(field, "messages_not_list",
                  f"{field} must be a list of {{{keys[0]!r}, {keys[1]!r}}} objects, got "
                  f"{type_name(value)} {show_value(value)}")
        return None
    out: list[Message] = []
    ok = True
    for i, turn in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            row.error(where, "message_not_object",
                      f"each turn must be an object like {{{keys[0]!r}: ..., {keys[1]!r}: ...}}, "
                      f"got {type_name(turn)} {show_value(turn)}")
            ok = False
            continue
        role, content = role_of(turn.get(keys[0])), turn.get(keys[1])
        if role is None:
            names = ", ".join(SHAREGPT_ROLES if role_of is sharegpt_role else ROLES)
            row.error(f"{where}.{keys[0]}", "unknown_role",
                      f"{keys[0]} {show_value(turn.get(keys[0]))} is not one of {names}; rename it")
            ok = False
        if not isinstance(content, str):
            row.error(f"{where}.{keys[1]}", "not_string",
                      f"{keys[1]} must be a string, got {type_name(content)} {show_value(content)}")
            ok = False
        if ok and role is not None and isinstance(content, str):
            out.append(Message(role, content))
    return out if ok else None


def _one_answer(turns: list[Message] | None, field: str, row: Any) -> str | None:
    """The text of an answer given as a list of turns: one assistant turn."""
    if turns is None:
        return None
    if len(turns) != 1 or turns[0].role != "assistant":
        roles = ", ".join(m.role for m in turns) or "none"
        row.error(field, "bad_answer",
                  f"{field} must be one assistant message, got {len(turns)} turn(s) ({roles}); "
                  "put the shared turns in the prompt and keep one answer on each side")
        return None
    return turns[0].content


def _unweighted(prompt: list[Message] | None) -> list[Message] | None:
    """The prompt's assistant turns get weight 0: only the final answer is compared."""
    if prompt is None:
        return None
    return [Message(m.role, m.content, 0.0 if m.role == "assistant" else m.weight) for m in prompt]


@dataclass
class TokenizedPair:
    """A pair rendered for preference tuning: the same prompt tokens, two answers.

    ``chosen`` and ``rejected`` are whole sequences (prompt and answer) whose labels are
    set on the answer tokens only, as ``template.tokenize_example`` renders a chat.
    """

    chosen: TokenizedExample
    rejected: TokenizedExample
    source: str = ""
    line: int = 0

    def __len__(self) -> int:
        return len(self.chosen) + len(self.rejected)

    @property
    def longest(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def tokenize_pair(tokenizer: Any, example: Example, template: str | None = None) -> TokenizedPair:
    """Render a pair's two sides with the rendering supervised training uses.

    Args:
        tokenizer: a Hugging Face tokenizer.
        example: a pair (``example.rejected`` set; ``messages`` end with the preferred answer).
        template: as for ``template.resolve_chat_template``.

    Raises:
        DataError: the example is not a pair, or the template cannot mask the answer.
    """
    if example.rejected is None or not example.messages:
        raise DataError(f"{example.source}:{example.line}: the row is not a preference pair",
                        hint="give rows with chosen and rejected answers")
    prompt = example.messages[:-1]
    sides = [Example([*prompt, Message("assistant", answer)], source=example.source,
                     line=example.line)
             for answer in (example.messages[-1].content, example.rejected)]
    chosen, rejected = (tokenize_example(tokenizer, e, template) for e in sides)
    return TokenizedPair(chosen, rejected, example.source, example.line)


def pair_length_policy(pairs: list[TokenizedPair], max_length: int,
                       policy: str) -> tuple[list[TokenizedPair], LengthReport]:
    """``length.apply_length_policy`` for pairs: a pair goes by its longer side.

    A pair is dropped, truncated (both sides cut to ``max_length``) or refused as a
    whole; a pair whose either answer has no token left is set aside too.

    Raises:
        DataError: policy is ``error`` and a side is longer than ``max_length``.
    """
    rep = LengthReport(policy, max_length)
    out: list[TokenizedPair] = []
    too_long = []
    for p in pairs:
        rep.longest = max(rep.longest, p.longest)
        where = f"{p.source}:{p.line}"
        if p.longest > max_length:
            if policy == "error":
                too_long.append(f"{where}: {p.longest} tokens > data.max_length {max_length}")
                continue
            if policy == "drop":
                rep.dropped += 1
                rep.dropped_lines.append(where)
                continue
            chosen, rejected = (TokenizedExample(s.input_ids[:max_length], s.labels[:max_length],
                                                 s.source, s.line) for s in (p.chosen, p.rejected))
            p = TokenizedPair(chosen, rejected, p.source, p.line)
            rep.truncated += 1
        if p.chosen.num_loss_tokens == 0 or p.rejected.num_loss_tokens == 0:
            rep.no_loss_tokens += 1
            rep.dropped_lines.append(f"{where} (no answer tokens)")
            continue
        out.append(p)
    if too_long:
        raise DataError(f"{len(too_long)} pair(s) are longer than data.max_length", too_long,
                        hint="raise data.max_length, or set data.overlength: drop | truncate")
    rep.kept = len(out)
    return out, rep


def not_pairs(examples: list[Example]) -> dict[str, list[int]]:
    """The lines of the examples that are not pairs, per source file (empty: all are)."""
    out: dict[str, list[int]] = {}
    for e in examples:
        if e.rejected is None:
            out.setdefault(e.source, []).append(e.line)
    return out
