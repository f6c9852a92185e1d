"""What reviewed items become: training rows, preference pairs, verdicts, feedback decisions.

Every function takes the ``FinalItem`` list of a project (agreed or adjudicated items
only: open and disagreed items never reach here) and returns ``Exported``: the records
to write, the items behind them, and, per reason (``SKIP_REASONS``), the final items
that gave no record, never dropped silently.

* **rows**: an output item gives a chat row, the prompt then the chosen answer: the
  preferred answer of a comparison (a tie chooses none), the single answer judged good,
  or the reviewers' correction of one judged bad. A data item gives its original row
  when its label was right, the row with the fix applied when it was wrong and a fix
  was given. An approved feedback item gives a chat row with the correction. Rows keep
  the format of their data file; rows of several formats are all written as chat rows
  (a classification row's text is the user turn and its label the answer, as tunelab
  reads it anyway), and a row that cannot be (plain text, a pair) is counted.
* **pairs**: ``{"prompt": [messages], "chosen": [one assistant message], "rejected": [one
  assistant message]}``, TRL's conversational shape, which ``tunelab.data.pairs`` reads (it
  does not read bare strings beside a list prompt): the preferred answer against each other
  one; a correction against the answer it corrects (a bad single answer, a wrong data
  label, approved feedback).
* **verdicts**: per model (or variant) of the comparisons' hidden keys: wins, losses,
  ties, the win rate (a tie counts half) and its 95% Wilson interval.
* **feedback**: ``{"feedback_id", "status": "approved"|"rejected", "correction"}``;
  an approval's correction is the reviewers' own when they gave one (it replaces the
  user's), else the user's exactly as the reviewers saw it (the item keeps it), so a
  correction the user rewrote later is never the one approved.

Field names and values are those of the default label schemas (``tunelab.review.schema``):
this module knows nothing of how answers were given or checked, nor of files.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field

from tunelab.db.review import FinalItem
from tunelab.eval.abtest import ALPHA, wilson

PREFERRED, VERDICT, CORRECTION = "preferred", "verdict", "correction"  # output projects
LABEL_OK, FIXED = "label_ok", "fixed"  # data projects
DECISION = "decision"  # feedback projects
TIE, GOOD, BAD, YES, NO, APPROVE, REJECT = "tie", "good", "bad", "yes", "no", "approve", "reject"

# Why a final item gave no record, as the summary says it.
SKIP_REASONS = {
    "tie": "the reviewers found the answers equally good (a tie chooses none)",
    "no_decision": "the decision holds no field this export reads",
    "bad_without_correction": "the answer was judged bad and no correction was given",
    "label_wrong_no_fix": "the label was judged wrong and no fix was given",
    "fix_not_applicable": "a fix cannot be written into a row of this format (a preference pair)",
    "not_convertible": "rows of several formats are written as chat rows, and this one cannot be",
    "no_prompt": "the item has no prompt to put before the answer",
    "no_answer": "the item shows no answer",
    "no_rejected_answer": "nothing to pair the chosen answer against (the answer was judged good)",
    "same_text": "the correction is the same text as the answer it corrects",
    "rejected": "the feedback was rejected",
    "no_correction": "approved feedback with no correction to train on",
    "not_a_comparison": "the item compares no answers of known models",
    "unknown_letter": "the preferred letter is not in the item's key",
    "not_feedback": "the item is not a feedback row",
}


@dataclass
class Exported:
    """Records to write, the items behind them, the items left out by reason."""

    records: list[dict] = field(default_factory=list)
    items: list[FinalItem] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    # ids of ``items``: comparing whole items (their answers and texts) for each record
    # made an export quadratic in the project's size
    _item_ids: set[int] = field(default_factory=set, repr=False)

    def add(self, item: FinalItem, *records: dict) -> None:
        self.records.extend(records)
        if item.item_id not in self._item_ids:
            self._item_ids.add(item.item_id)
            self.items.append(item)


def _text(value: object) -> str:
    """A text answer with whitespace collapsed; ``""`` means none was given."""
    return " ".join(str(value).split()) if value is not None else ""


def _answers(item: FinalItem) -> dict[str, str]:
    return {a["label"]: a["text"] for a in item.shown.get("answers", [])}


def _chat(prompt: list[dict], answer: str) -> dict:
    return {"messages": [*prompt, {"role": "assistant", "content": answer}]}


def _feedback_correction(item: FinalItem) -> str:
    """An approved feedback item's correction: the reviewers' own, else the user's."""
    return (str(item.decision.get(CORRECTION) or "").strip()
            or str(item.hidden.get("correction") or "").strip())


def chosen_answer(item: FinalItem) -> tuple[str | None, str | None, str | None]:
    """``(chosen, rejected_of_a_correction, reason)`` of an output or feedback item.

    ``rejected_of_a_correction`` is the answer a correction replaces (for pairs);
    ``reason`` says why there is no chosen answer.
    """
    answers, d = _answers(item), item.decision
    if item.source == "feedback":
        if d.get(DECISION) == REJECT:
            return None, None, "rejected"
        if d.get(DECISION) != APPROVE:
            return None, None, "no_decision"
        fix = _feedback_correction(item)
        return (fix, next(iter(answers.values()), None), None) if fix else (None, None, "no_correction")
    if len(answers) >= 2:
        pref = d.get(PREFERRED)
        if pref is None:
            return None, None, "no_decision"
        if pref == TIE:
            return None, None, "tie"
        return (answers[pref], None, None) if pref in answers else (None, None, "unknown_letter")
    if not answers:
        return None, None, "no_answer"
    (answer,) = answers.values()
    if d.get(VERDICT) == GOOD:
        return answer, None, None
    if d.get(VERDICT) == BAD:
        fix = str(d.get(CORRECTION) or "").strip()
        return (fix, answer, None) if fix else (None, None, "bad_without_correction")
    return None, None, "no_decision"


def _unpacked(row: dict) -> dict:
    """A row with list cells that tables carry as JSON text (CSV, TSV) parsed back."""
    out = copy.deepcopy(row)
    for key in ("messages", "conversations", "instances", "input", "preferred_output",
                "non_preferred_output"):
        if isinstance(out.get(key), str):
            try:
                value = json.loads(out[key])
            except ValueError:
                continue
            if isinstance(value, (list, dict)):
                out[key] = value
    return out


def _last(turns: list, role_key: str, roles: tuple[str, ...]) -> dict | None:
    return next((t for t in reversed(turns) if isinstance(t, dict) and t.get(role_key) in roles),
                None)


def fixed_row(row: dict, fmt: str | None, fix: str) -> dict | None:
    """The row with its answer (or label) replaced by ``fix``; None for a format that has
    no single answer to replace (a preference pair)."""
    out = _unpacked(row)
    if fmt == "classification":
        out["label"] = fix
    elif fmt == "text":
        out["text"] = fix
    elif fmt == "prompt_completion":
        out["completion"] = fix
    elif fmt == "alpaca":
        out["output" if "output" in out else "response"] = fix
    elif fmt == "self_instruct" and isinstance(out.get("instances"), list) and out["instances"]:
        out["instances"][0]["output"] = fix
    elif fmt == "chat" and isinstance(out.get("messages"), list) \
            and (turn := _last(out["messages"], "role", ("assistant",))) is not None:
        turn["content"] = fix
    elif fmt == "sharegpt" and isinstance(out.get("conversations"), list) and (
            turn := _last(out["conversations"], "from", ("gpt", "assistant", "chatgpt"))) is not None:
        turn["value"] = fix
    else:
        return None
    return out


def _data_answer(item: FinalItem) -> str | None:
    """The answer (or label) a data item's row gives, as the reviewers saw it."""
    for d in item.shown.get("details", []):
        if d.get("name") == "label":
            return str(d.get("value"))
    answers = _answers(item)
    return answers.get("A")


def _data_fix(item: FinalItem) -> tuple[str | None, str | None]:
    """``(fix or None when the row was right, reason when it gives nothing)``."""
    ok = item.decision.get(LABEL_OK)
    if ok == YES:
        return None, None
    if ok != NO:
        return None, "no_decision"
    fix = str(item.decision.get(FIXED) or "").strip()
    return (fix, None) if fix else (None, "label_wrong_no_fix")


def export_rows(items: list[FinalItem]) -> Exported:
    """Training rows from final items (see the module docstring)."""
    out = Exported()
    made: list[tuple[FinalItem, str, dict, dict | None]] = []  # item, format, row, chat form
    for item in items:
        if item.source == "data":
            fix, reason = _data_fix(item)
            if reason is not None:
                out.skipped[reason] += 1
                continue
            fmt = item.hidden.get("format")
            row = _unpacked(item.hidden["row"]) if fix is None else fixed_row(item.hidden["row"],
                                                                              fmt, fix)
            if row is None:
                out.skipped["fix_not_applicable"] += 1
                continue
            prompt, answer = item.shown.get("prompt", []), fix or _data_answer(item)
            chat = (_chat(prompt, answer) if prompt and answer is not None
                    and fmt != "preference" else None)
            made.append((item, str(fmt), row, chat))
            continue
        chosen, _, reason = chosen_answer(item)
        if reason is not None or chosen is None:
            out.skipped[reason or "no_answer"] += 1
            continue
        prompt = item.shown.get("prompt", [])
        if not prompt:
            out.skipped["no_prompt"] += 1
            continue
        row = _chat(prompt, chosen)
        made.append((item, "chat", row, row))
    formats = sorted({fmt for _, fmt, _, _ in made})
    mixed = len(formats) > 1
    if mixed:
        out.notes.append(f"the rows come in {len(formats)} formats ({', '.join(formats)}); "
                         "all are written as chat rows")
    for item, _, row, chat in made:
        if mixed and chat is None:
            out.skipped["not_convertible"] += 1
            continue
        out.add(item, chat if mixed and chat is not None else row)
    return out


def _pair(prompt: list[dict], chosen: str, rejected: str) -> dict:
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def export_pairs(items: list[FinalItem]) -> Exported:
    """Preference pairs from final items (see the module docstring)."""
    out = Exported()
    for item in items:
        prompt = item.shown.get("prompt", [])
        if item.source == "data":
            fix, reason = _data_fix(item)
            rejected = _data_answer(item)
            if reason is None and fix is None:
                reason = "no_rejected_answer"
            chosen = fix
        else:
            chosen, rejected, reason = chosen_answer(item)
            answers = _answers(item)
            if reason is None and rejected is None and len(answers) >= 2:
                others = [t for x, t in answers.items() if x != item.decision.get(PREFERRED)]
                if not prompt:
                    out.skipped["no_prompt"] += 1
                    continue
                out.add(item, *[_pair(prompt, str(chosen), t) for t in others])
                continue
            if reason is None and rejected is None:
                reason = "no_rejected_answer"
        if reason is not None or chosen is None or rejected is None:
            out.skipped[reason or "no_answer"] += 1
        elif not prompt:
            out.skipped["no_prompt"] += 1
        elif _text(chosen) == _text(rejected):
            out.skipped["same_text"] += 1
        else:
            out.add(item, _pair(prompt, chosen, rejected))
    return out


def export_verdicts(items: list[FinalItem]) -> Exported:
    """Win rates per model (or variant) from the comparisons; ``summary["per_model"]``
    holds them, ``records`` one verdict per item."""
    out = Exported()
    tally: dict[str, Counter[str]] = {}
    for item in items:
        key = item.hidden.get("key")
        pref = item.decision.get(PREFERRED)
        if not isinstance(key, dict) or len(_answers(item)) < 2 or pref is None:
            out.skipped["not_a_comparison"] += 1
            continue
        if pref != TIE and pref not in key:
            out.skipped["unknown_letter"] += 1
            continue
        for letter, model in key.items():
            outcome = "ties" if pref == TIE else "wins" if letter == pref else "losses"
            tally.setdefault(str(model), Counter())[outcome] += 1
        out.add(item, {"item_id": item.item_id, "source_ref": item.source_ref,
                       "preferred": TIE if pref == TIE else key[pref], "key": key,
                       "how": item.how})
    per_model = {}
    for model in sorted(tally):
        c = tally[model]
        n = c["wins"] + c["losses"] + c["ties"]
        x = c["wins"] + 0.5 * c["ties"]
        low, high = wilson(x, n)
        per_model[model] = {"wins": c["wins"], "losses": c["losses"], "ties": c["ties"],
                            "judged": n, "win_rate": x / n, "low": low, "high": high}
    out.summary = {"per_model": per_model, "interval": f"Wilson, {1 - ALPHA:.0%}",
                   "tie_counts": 0.5}
    return out


def export_feedback_decisions(items: list[FinalItem]) -> Exported:
    """One decision per feedback item: approved, with the correction approved (the
    reviewers' own, else the user's as the reviewers saw it), or rejected."""
    out = Exported()
    for item in items:
        fid = item.hidden.get("feedback_id")
        if item.source != "feedback" or not isinstance(fid, int):
            out.skipped["not_feedback"] += 1
            continue
        d = item.decision.get(DECISION)
        if d not in (APPROVE, REJECT):
            out.skipped["no_decision"] += 1
            continue
        # The user's correction is pinned as the reviewers saw it when the item was made:
        # the feedback row may say something else by now, and that was not reviewed.
        approved = _feedback_correction(item) or None
        out.add(item, {"feedback_id": fid, "status": "approved" if d == APPROVE else "rejected",
                       "correction": approved if d == APPROVE else None})
    return out


EXPORTERS = {"rows": export_rows, "pairs": export_pairs, "verdicts": export_verdicts,
             "feedback": export_feedback_decisions}
