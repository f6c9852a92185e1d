"""The ``tool_call`` task: did the model call the right function, with the right arguments?

Rows are training examples (chat or ShareGPT rows with ``tools``). The prompt of a row is
every turn before its last assistant turn; the expected answer is that turn: its
``tool_calls`` (a call is expected) or, when it has none, a plain answer (no call is
expected, e.g. the answer after a tool result). The answer generated is read back with
``tunelab.data.tool_text.parse_calls`` and scored per row:

* ``name_correct``: one expected call: the first call made names its function; several:
  the functions called, in order, are the expected ones.
* ``valid_json``: every call made has arguments that parse as a JSON object.
* ``schema_valid``: every call made names a declared function and its arguments match
  that function's ``parameters`` (``jsonschema``).
* ``exact``: the calls made are the expected ones, same number and order, names equal and
  arguments equal after JSON normalization (``tools.normalized``: key order and spacing
  do not count).
* ``argument_accuracy``: the share of the expected argument keys whose value the call
  made at the same position (with the same name) gives, normalized.
* ``false_call`` (a call when none is expected) and ``missed_call`` (none when one is).

The headline ``correct_call_rate`` is ``exact`` over the rows that expect a call. This
module knows nothing of models or templates: it takes the ``predict`` callable, which
renders the declarations the way the run was trained (``tunelab.eval.callables``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tunelab.data.example import Example, ToolCall
from tunelab.data.tool_text import ParsedCall, call_json, normalized, parse_calls
from tunelab.data.tools import arguments_problems
from tunelab.errors import DataError
from tunelab.eval.rows import EvalRow
from tunelab.eval.tasks import ModelCallables, TaskResult, mean_stat

# Rows named in an error before "and N more".
_ROWS_SHOWN = 20
# Rates over rows that expect (or expect no) call: smaller is better.
_LOWER_IS_BETTER = frozenset({"false_call_rate", "missed_call_rate"})


def _last_assistant(ex: Example) -> int | None:
    return next((i for i in range(len(ex.messages) - 1, -1, -1)
                 if ex.messages[i].role == "assistant"), None)


def expected_calls(row: EvalRow) -> tuple[ToolCall, ...]:
    """The calls a row expects: those of its example's last assistant turn (none: a plain
    answer is expected)."""
    ex = row.example
    if ex is None:
        return ()
    last = _last_assistant(ex)
    return () if last is None else ex.messages[last].tool_calls


def tool_call_rows(examples: Sequence[Example]) -> list[EvalRow]:
    """The rows of the tool_call task, one per example, in order.

    Args:
        examples: training examples (``tunelab.data.load.load_examples``).

    Returns:
        Rows whose prompt is every turn before the example's last assistant turn, whose
        reference is that turn's calls as JSON lines (``tools.call_json``) or its text,
        and whose ``example`` keeps the declarations (``Example.tools``).

    Raises:
        DataError: rows without an assistant turn (or with nothing before it), listed; no
            rows; or no row that declares tools or expects a call.
    """
    rows: list[EvalRow] = []
    bad: list[str] = []
    for ex in examples:
        ident = ex.meta.get("id")
        name = str(ident) if ident is not None else f"{ex.source}:{ex.line}"
        last = _last_assistant(ex)
        if last is None:
            bad.append(f"{name}: no assistant turn to compare the model's answer with")
            continue
        if last == 0:
            bad.append(f"{name}: the assistant turn comes first; nothing asks for it")
            continue
        answer = ex.messages[last]
        reference = ("\n".join(call_json(c) for c in answer.tool_calls) if answer.tool_calls
                     else answer.content.strip())
        rows.append(EvalRow(id=name, prompt=list(ex.messages[:last]), reference=reference,
                            meta=dict(ex.meta), example=ex))
    if bad:
        more = len(bad) - _ROWS_SHOWN
        raise DataError(f"{len(bad)} row(s) cannot be scored by the tool_call task",
                        findings=bad[:_ROWS_SHOWN] + ([f"... and {more} more"] if more > 0 else []),
                        hint="each row needs a conversation ending in the assistant's expected "
                             "answer: its tool_calls, or a plain answer when no call is expected")
    if not rows:
        raise DataError("no rows to evaluate for the tool_call task", hint="check the file and --limit")
    if not any(r.example is not None and r.example.tools for r in rows) \
            and not any(expected_calls(r) for r in rows):
        raise DataError("no row declares tools or expects a call, so there is nothing for the "
                        "tool_call task to score",
                        hint="give rows with `tools` (chat: a list of functions; ShareGPT: "
                             "`tools` and `function_call` turns), or use --task generate")
    return rows


def _call_record(c: ParsedCall) -> dict:
    return {"name": c.name, "arguments": c.arguments, **({} if c.arguments is not None
                                                          else {"text": c.text})}


def _schema_problems(calls: Sequence[ParsedCall], declared: dict[str, dict]) -> list[str]:
    problems = []
    for i, c in enumerate(calls, 1):
        spec = declared.get(c.name)
        if spec is None:
            names = ", ".join(map(repr, declared)) or "none"
            problems.append(f"call {i}: {c.name!r} is not declared (declared: {names})")
        elif c.arguments is None:
            problems.append(f"call {i} ({c.name}): the arguments are not valid JSON")
        else:
            problems += [f"call {i} ({c.name}): {p}" for p in arguments_problems(spec, c.arguments)]
    return problems


def _argument_accuracy(expected: Sequence[ToolCall], calls: Sequence[ParsedCall]) -> float | None:
    total = hits = 0
    for i, exp in enumerate(expected):
        args = exp.arguments if isinstance(exp.arguments, dict) else {}
        made = calls[i] if i < len(calls) else None
        for key, value in args.items():
            total += 1
            if made is not None and made.name == exp.name and made.arguments is not None \
                    and key in made.arguments and normalized(made.arguments[key]) == normalized(value):
                hits += 1
    return hits / total if total else None


def score_answer(answer: str, expected: Sequence[ToolCall], tools: Sequence[dict]) -> dict:
    """Score one generated answer against the expected calls (none: a plain answer).

    Args:
        answer: the text generated.
        expected: the calls expected, in order.
        tools: the row's declarations.

    Returns:
        ``calls`` (parsed), ``content`` (the text around them), ``called``,
        ``expected_call``, ``name_correct``, ``exact``, ``argument_accuracy`` (None on
        rows that expect no call, and ``argument_accuracy`` also when the expected calls
        have no arguments), ``valid_json``, ``schema_valid`` and ``problems`` (None, []
        when no call was made), ``false_call``, ``missed_call``, ``correct``.
    """
    content, calls = parse_calls(answer)
    called, expecting = bool(calls), bool(expected)
    declared = {t["name"]: t for t in tools}
    problems = _schema_problems(calls, declared)
    rec: dict = {"calls": [_call_record(c) for c in calls], "content": content,
                 "called": called, "expected_call": expecting,
                 "valid_json": all(c.arguments is not None for c in calls) if called else None,
                 "schema_valid": not problems if called else None, "problems": problems,
                 "name_correct": None, "exact": None, "argument_accuracy": None,
                 "false_call": None if expecting else called,
                 "missed_call": (not called) if expecting else None}
    if expecting:
        made = [c.name for c in calls]
        wanted = [c.name for c in expected]
        rec["name_correct"] = (made[:1] == wanted) if len(wanted) == 1 else made == wanted
        rec["exact"] = len(calls) == len(expected) and all(
            m.name == e.name and m.arguments is not None
            and normalized(m.arguments) == normalized(e.arguments)
            for m, e in zip(calls, expected, strict=True))
        rec["argument_accuracy"] = _argument_accuracy(expected, calls)
    rec["correct"] = rec["exact"] if expecting else not called
    return rec


def _rate(values: Sequence[bool | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _as_float(v: bool | float | None) -> float | None:
    return None if v is None else float(v)


def tool_call_result(model_name: str, rows: Sequence[EvalRow], answers: Sequence[str]) -> TaskResult:
    """Score generated answers: headline rates, per-function rates, per-row records and
    bootstrap-ready statistics (primary: ``correct_call_rate``)."""
    records: list[dict] = []
    for r, a in zip(rows, answers, strict=True):
        tools = r.example.tools if r.example is not None else ()
        expected = expected_calls(r)
        s = score_answer(a, expected, tools)
        predicted = "\n".join(normalized({"name": c["name"], "arguments": c["arguments"]})
                              if c["arguments"] is not None else c["text"] for c in s["calls"])
        records.append({"id": r.id, "answer": a, "predicted": predicted or s["content"],
                        "reference": r.reference,
                        "expected": [{"name": c.name, "arguments": c.arguments} for c in expected],
                        **s})
    # A row where a rate is undefined (a rate over rows that expect a call, on a row that
    # expects none) is None there and left out of it, on the whole set, a slice or a resample.
    per_row = {
        "correct_call_rate": [x["exact"] for x in records],
        "name_accuracy": [x["name_correct"] for x in records],
        "valid_json_rate": [x["valid_json"] for x in records],
        "schema_valid_rate": [x["schema_valid"] for x in records],
        "argument_accuracy": [x["argument_accuracy"] for x in records],
        "false_call_rate": [x["false_call"] for x in records],
        "missed_call_rate": [x["missed_call"] for x in records],
        "accuracy": [x["correct"] for x in records],
    }
    stats = {k: mean_stat([_as_float(v) for v in vs]) for k, vs in per_row.items()}
    everything = np.arange(len(records))
    metrics: dict = {k: stats[k](everything) for k in stats}
    metrics.update(
        rows=len(records), call_rows=sum(x["expected_call"] for x in records),
        no_call_rows=sum(not x["expected_call"] for x in records),
        calls_made=sum(len(x["calls"]) for x in records),
        per_function=_per_function(records))
    return TaskResult("tool_call", model_name, metrics, records, stats,
                      primary="correct_call_rate", lower_is_better=_LOWER_IS_BETTER)


def _per_function(records: Sequence[dict]) -> dict:
    """Per expected function (the first expected call's): rows and their rates."""
    groups: dict[str, list[dict]] = {}
    for x in records:
        if x["expected"]:
            groups.setdefault(x["expected"][0]["name"], []).append(x)
    return {name: {"rows": len(xs), "correct_call_rate": _rate([x["exact"] for x in xs]),
                   "name_accuracy": _rate([x["name_correct"] for x in xs])}
            for name, xs in sorted(groups.items())}


def run_tool_call(model: ModelCallables, rows: Sequence[EvalRow]) -> TaskResult:
    """Answer every row's prompt with its declarations and score the calls made.

    Args:
        model: the model's callables; ``predict(chats, tools=[...])`` gets each row's
            declarations (``Example.tools``), rendered as the run was trained.
        rows: rows from ``tool_call_rows``.

    Raises:
        DataError: the model did not answer every prompt once.
    """
    chats = [list(r.prompt) for r in rows]
    tools = [tuple(r.example.tools) if r.example is not None else () for r in rows]
    answers = list(model.predict(chats, tools=tools))
    if len(answers) != len(chats):
        raise DataError(f"{model.name}: {len(answers)} answers for {len(chats)} prompts",
                        hint="the predict callable must answer every chat once, in order")
    return tool_call_result(model.name, rows, answers)
