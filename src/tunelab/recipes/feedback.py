"""`tunelab feedback export`: feedback in the database out as training rows, through the gate.

From each feedback row and the logged request it is about (``tunelab.db.feedback_export``):

* a **correction** makes a supervised chat row (the logged messages, then the correction
  as the assistant turn) and a preference pair (the correction preferred over the
  logged answer, unless the two are the same text);
* an **up** answer and a **down** answer to the same prompt (the same logged messages)
  make a preference pair. ``rating`` decides; without one, ``score`` 4-5 counts as up and
  1-2 as down (3 says neither).

Pairs are written in OpenAI's DPO line shape, ``{"input": {"messages"},
"preferred_output", "non_preferred_output"}``. Every feedback row that yields nothing is
counted under one reason (``SKIP_REASONS``), never dropped silently. The rows are then
run through the feedback gate (``tunelab.gate.feedback``: structure, duplicates, personal
data as errors, leakage against the held-out set), whose report is written beside them.

Only reviewed feedback should train a model: by default the export takes the feedback
that a feedback review project approved (``tunelab review export --as feedback``), with
the reviewers' correction in place of the user's when they gave one, and refuses when
none is approved yet. ``include_unreviewed`` also takes feedback no one reviewed (the
old behaviour); feedback the reviewers rejected is never exported. Left-out feedback
is counted under ``not_reviewed`` or ``rejected_in_review``.

This module prints nothing and sets no exit codes: ``tunelab.cli.feedback`` does.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from tunelab.config.schema import DEFAULT_RUNS_DIR
from tunelab.db.database import open_database
from tunelab.db.feedback_export import FeedbackItem, feedback_with_requests
from tunelab.errors import DataError, UsageError
from tunelab.files import make_dir, write_json_atomic, write_text_atomic
from tunelab.gate.dedup import normalize_text
from tunelab.gate.feedback import GatedFile, gate_file, heldout_prompts
from tunelab.models.runs import run_settings
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.tracking.run_dir import find_run

SFT_FILE = "sft.jsonl"
PAIRS_FILE = "pairs.jsonl"
GATE_FILE = "gate.json"  # the gate's report; `tunelab retrain` refuses data it failed
SUMMARY_FILE = "export.json"

# Why a feedback row yielded no training row, in the order the summary lists them.
SKIP_REASONS = {
    "not_in_log": "its request is not in the request log",
    "text_not_logged": "the prompt or answer was not logged (the server ran with log_text: false)",
    "failed_request": "its request did not succeed",
    "not_chat": "a completions request (only chat requests are exported)",
    "unreadable_prompt": "the logged prompt is not a list of chat messages ending in a user turn",
    "no_signal": "no correction and no up or down rating (a comment or a middle score only)",
    "no_counterpart": "a rating with no opposite rating on the same prompt to pair it with",
    "duplicate": "the same row as an earlier one",
    "not_reviewed": "no review has approved it yet (pass --include-unreviewed to take it)",
    "rejected_in_review": "a feedback review rejected it",
}
APPROVED, REJECTED = "approved", "rejected"  # feedback.review_status (tunelab.db.review)
UP_SCORE, DOWN_SCORE = 4, 2  # a score without a rating: >= 4 is up, <= 2 is down


@dataclass
class ExportResult:
    """What an export wrote and what the gate found."""

    out: Path
    feedback_rows: int
    sft_rows: int
    pair_rows: int
    skipped: dict[str, int]
    gate: list[GatedFile]
    heldout: list[str]
    notes: list[str] = field(default_factory=list)
    reviewed: bool = True  # only approved feedback was exported

    @property
    def ok(self) -> bool:
        """Whether the gate passed every written file."""
        return all(g.ok for g in self.gate)

    def as_dict(self) -> dict:
        return {"out": str(self.out), "reviewed": self.reviewed, "feedback_rows": self.feedback_rows,
                "written": {SFT_FILE: self.sft_rows, PAIRS_FILE: self.pair_rows},
                "skipped": self.skipped, "heldout": self.heldout, "notes": self.notes,
                "gate": {"ok": self.ok, "files": [g.as_dict() for g in self.gate]}}


class _Rows:
    """Rows of one output file, each written once, with the feedback ids behind it."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.sources: dict[str, list[int]] = {}
        self.prompts: dict[str, str] = {}

    def add(self, row: dict, prompt: str, ids: list[int]) -> bool:
        key = json.dumps(row, ensure_ascii=False, sort_keys=True)
        new = key not in self.rows
        if new:
            self.rows[key], self.prompts[key] = row, prompt
        self.sources.setdefault(key, []).extend(i for i in ids if i not in self.sources.get(key, []))
        return new

    def jsonl(self) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows.values())


def _messages(item: FeedbackItem) -> list[dict] | None:
    """The logged chat messages, or None when they are not a usable chat prompt."""
    try:
        msgs = json.loads(item.prompt or "")
    except ValueError:
        return None
    if not isinstance(msgs, list) or not msgs:
        return None
    out = []
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            return None
        out.append({"role": m["role"], "content": m["content"]})
    return out if out[-1]["role"] == "user" else None


def _unusable(item: FeedbackItem) -> str | None:
    if not item.found:
        return "not_in_log"
    if item.status_code != 200:
        return "failed_request"
    if item.prompt is None or item.answer is None:
        return "text_not_logged"
    if item.endpoint != "chat.completions":
        return "not_chat"
    return None if _messages(item) is not None else "unreadable_prompt"


def polarity(item: FeedbackItem) -> str | None:
    """``"up"``, ``"down"`` or None: the rating, else the score (see ``UP_SCORE``)."""
    if item.rating in ("up", "down"):
        return item.rating
    if item.score is not None and item.score >= UP_SCORE:
        return "up"
    if item.score is not None and item.score <= DOWN_SCORE:
        return "down"
    return None


def _pair(msgs: list[dict], good: str, bad: str) -> dict:
    return {"input": {"messages": msgs},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


def _user_text(msgs: list[dict]) -> str:
    return "\n".join(m["content"] for m in msgs if m["role"] == "user")


def build_rows(items: list[FeedbackItem]) -> tuple[_Rows, _Rows, Counter[str]]:
    """The supervised rows, the preference pairs, and the skipped feedback by reason."""
    sft, pairs, skipped = _Rows(), _Rows(), Counter[str]()
    made: set[int] = set()
    tried: set[int] = set()  # feedback that would have made a row (made, or a duplicate)
    rated: dict[str, dict[str, dict[str, tuple[str, list[int]]]]] = {}
    prompt_of: dict[str, list[dict]] = {}
    for item in items:
        reason = _unusable(item)
        if reason is not None:
            skipped[reason] += 1
            continue
        msgs = _messages(item)
        assert msgs is not None and item.answer is not None  # _unusable checked both
        answer = item.answer
        correction = (item.correction or "").strip() or None
        side = polarity(item)
        if correction is None and side is None:
            skipped["no_signal"] += 1
            continue
        tried.add(item.feedback_id)
        ids, text = [item.feedback_id], _user_text(msgs)
        if correction is not None:
            row = {"messages": [*msgs, {"role": "assistant", "content": correction}]}
            if sft.add(row, text, ids):
                made.add(item.feedback_id)
            if normalize_text(correction) != normalize_text(answer) and \
                    pairs.add(_pair(msgs, correction, answer), text, ids):
                made.add(item.feedback_id)
        if side is not None:
            key = json.dumps(msgs, sort_keys=True)
            prompt_of[key] = msgs
            bucket = rated.setdefault(key, {"up": {}, "down": {}})[side]
            bucket.setdefault(normalize_text(answer), (answer, []))[1].append(item.feedback_id)
    for key, sides in rated.items():
        msgs = prompt_of[key]
        for up_norm, (good, up_ids) in sides["up"].items():
            for down_norm, (bad, down_ids) in sides["down"].items():
                if up_norm != down_norm and pairs.add(_pair(msgs, good, bad), _user_text(msgs),
                                                      up_ids + down_ids):
                    made.update(up_ids + down_ids)
    in_rows = {i for rows in (sft, pairs) for ids in rows.sources.values() for i in ids}
    for item_id in sorted(tried - made):
        skipped["duplicate" if item_id in in_rows else "no_counterpart"] += 1
    return sft, pairs, skipped


def reviewed_only(items: list[FeedbackItem],
                  include_unreviewed: bool) -> tuple[list[FeedbackItem], Counter[str]]:
    """The feedback an export may use, and the rest by reason.

    Approved feedback is kept with the reviewers' correction in place of the user's when
    they gave one; rejected feedback is always left out; unreviewed feedback is kept only
    with ``include_unreviewed``. A row changed after its review (``updated_at >
    reviewed_at``) counts as unreviewed: the review judged what it said before.
    (``write_feedback`` clears the review on a change; this guards rows written
    any other way.)
    """
    kept, left_out = [], Counter[str]()
    for item in items:
        stale = (item.reviewed_at is not None and item.updated_at is not None
                 and item.updated_at > item.reviewed_at)
        status = None if stale else item.review_status
        if stale:
            item = replace(item, review_status=None, review_correction=None, reviewed_at=None)
        if status == REJECTED:
            left_out["rejected_in_review"] += 1
        elif status == APPROVED:
            fix = (item.review_correction or "").strip()
            kept.append(replace(item, correction=fix) if fix else item)
        elif include_unreviewed:
            kept.append(item)
        else:
            left_out["not_reviewed"] += 1
    return kept, left_out


def _heldout(eval_path: str | None, model: str | None, runs_dir: str,
             notes: list[str]) -> list[str]:
    """The held-out files leakage is checked against: ``eval_path``, else the run's
    validation files when ``model`` names a run."""
    if eval_path is not None:
        if not Path(eval_path).is_file():
            raise DataError(f"the evaluation file {eval_path} is missing",
                            hint="give the held-out file the model is judged on with --eval")
        return [eval_path]
    run = find_run(model, runs_dir) if model is not None else None
    if run is None:
        notes.append("leakage was not checked: give the evaluation set with --eval (or "
                     "name a run with --model to use its validation files)")
        return []
    sources = run_settings(run).get("data", {}).get("validation") or []
    paths = [s["path"] if isinstance(s, dict) else str(s) for s in sources]
    if not paths:
        notes.append(f"leakage was not checked: run {run.name} has no validation file (it "
                     "held out a split of its training data); give one with --eval")
    return paths


def export_feedback(out_dir: str | Path, db_url: str | None = None, since: datetime | None = None,
                    model: str | None = None, experiment: str | None = None,
                    include_unreviewed: bool = False, eval_path: str | None = None,
                    runs_dir: str = DEFAULT_RUNS_DIR, reporter: Reporter = SILENT) -> ExportResult:
    """Export feedback as ``sft.jsonl`` and ``pairs.jsonl`` in ``out_dir`` and gate them.

    Args:
        out_dir: the folder the files go to (created; files in it are replaced whole).
        db_url: the database; None: the default SQLite file under the tunelab home.
        since: only feedback given at or after this time.
        model: only feedback on answers of this served model (a run's name serves as the
            run: its validation files become the held-out set).
        experiment: only feedback on requests that named this experiment.
        include_unreviewed: also export feedback that no one reviewed (default: only the
            feedback a review approved).
        eval_path: the held-out file for the leakage check (overrides the run's).
        runs_dir: where ``model`` is looked up as a run.
        reporter: progress lines.

    Returns:
        The counts and the gate's findings (``ok`` is False when the gate failed; the
        files and the report are written either way, for the user to inspect).

    Raises:
        UsageError: no selected feedback is approved and unreviewed feedback was not
            allowed.
        DataError: the evaluation file is missing or unreadable, or ``out_dir`` cannot
            be written.
        DatabaseError: the database cannot be opened or read.
    """
    notes: list[str] = []
    heldout_files = _heldout(eval_path, model, runs_dir, notes)
    heldout = [t for p in heldout_files for t in heldout_prompts(p)] if heldout_files else None
    db = open_database(db_url)
    try:
        items = feedback_with_requests(db, since, model, experiment)
    finally:
        db.close()
    reporter.info(f"read {len(items)} feedback row(s) from {db.safe_url}")
    kept, left_out = reviewed_only(items, include_unreviewed)
    if not include_unreviewed and not kept:
        raise UsageError(
            f"feedback export trains only on reviewed feedback, and none of the {len(items)} "
            f"feedback row(s) selected is approved yet ({left_out['not_reviewed']} not "
            f"reviewed, {left_out['rejected_in_review']} rejected)",
            hint="review it in a feedback project (`tunelab review add PROJECT --feedback`, "
                 "then `tunelab review export PROJECT --as feedback --out FILE.json`), or "
                 "read it first and pass --include-unreviewed")
    sft, pairs, skipped = build_rows(kept)
    skipped.update(left_out)
    out = make_dir(out_dir, error=DataError)
    gated = []
    provenance = {}
    for name, rows in ((SFT_FILE, sft), (PAIRS_FILE, pairs)):
        path = write_text_atomic(out / name, rows.jsonl(), error=DataError)
        gated.append(gate_file(path, list(rows.prompts.values()), heldout))
        provenance[name] = list(rows.sources.values())  # feedback ids behind each line
    result = ExportResult(out, len(items), len(sft.rows), len(pairs.rows),
                          {k: skipped[k] for k in SKIP_REASONS if skipped[k]}, gated,
                          heldout_files, notes, reviewed=not include_unreviewed)
    report = result.as_dict()
    write_json_atomic(out / GATE_FILE, report["gate"], error=DataError)
    filters = {"since": since, "model": model, "experiment": experiment}
    write_json_atomic(out / SUMMARY_FILE, {**report, "filters": filters,
                                           "feedback_ids": provenance}, error=DataError)
    return result
