"""Where review items come from: eval sheets, data files, the request log, experiments, feedback.

Each function reads one source and returns ``Collected``: the ``ItemInput`` list to add
to a project and, per reason (``SKIP_REASONS``), how many rows of the source gave no
item, so that nothing is dropped silently (the commonest: a request whose text the
server did not keep, ``log_text: false``).

Every item's ``shown`` is what all reviewers see: ``prompt`` (the conversation before the
answer), ``reference``, ``answers`` (labelled A, B, ...; several answers are a blinded
comparison) and ``details``; ``hidden`` keeps what they must not see (which model wrote
which answer, the original data row, the feedback id) for the export. ``source_ref`` is
unique per source row, so adding the same source twice adds nothing new:

=================  ================================  =====================================
source             one item per                      source_ref
=================  ================================  =====================================
eval_sheet         row of ``review.csv``             ``eval:<key sha256[:12]>:item=<n>``
data               row of a data file                ``data:<file name>:<line>:<row
                                                     sha256[:12]>``
log_sample         sampled answered request          ``log:<request id>``
log_negative       request with negative feedback    ``log:<request id>`` (same request,
                                                     same item as a sampled one)
experiment_pair    two variants' answers to one      ``experiment:<name>:<id>:<id>``
                   prompt
feedback           row of feedback with a            ``feedback:<id>:<digest>``
                   correction or a negative rating
=================  ================================  =====================================

A feedback's digest (``feedback_digest``) covers what the user said (correction,
rating, score, comment): feedback the user changed after it was added is a new item,
reviewed afresh, and the item of the old words stays what it was. A data item's
reference holds the row's digest (of its JSON with sorted keys) beside the file name and
line, which are there for people: two files of the same name, or a file edited since,
give new items for the rows that differ instead of being taken for rows already added.

An eval sheet's prompt was written as ``[role] content`` blocks joined by blank lines;
they are read back as messages (a content that itself holds a blank line followed by
``[user] `` would be split there; a text that does not start with a block is one user
message). This module knows nothing of label schemas, reviewers or exports.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations
from pathlib import Path

from tunelab.data.example import Example
from tunelab.data.formats import detect_format
from tunelab.data.load import check_file
from tunelab.data.readers import read_located
from tunelab.data.table import read_table
from tunelab.db.database import Database
from tunelab.db.feedback_export import FeedbackItem, feedback_with_requests
from tunelab.db.logged_requests import OK_STATUS, answered_request_ids, requests_by_ids
from tunelab.db.requests import RequestRecord
from tunelab.db.review import ItemInput
from tunelab.errors import DataError

NEGATIVE_SCORE = 2  # a score at or below this is negative feedback (scores run 1-5)
KEY_DIGEST = 12  # hex digits of the key file's SHA-256 in an eval item's reference
FEEDBACK_DIGEST = 10  # hex digits of what a user said in a feedback item's reference
ROW_DIGEST = 12  # hex digits of a data row's SHA-256 in a data item's reference
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Why a row of a source gave no item, as the summary says it.
SKIP_REASONS = {
    "text_not_logged": "the prompt or answer was not logged (the server ran with log_text: false)",
    "not_in_log": "its request is not in the request log",
    "failed_request": "its request did not succeed",
    "unreadable_prompt": "the logged prompt is not a list of chat messages",
    "no_signal": "feedback with neither a correction nor a negative rating",
    "row_has_errors": "the data row has errors (run `tunelab data check FILE` to see them)",
    "unpaired": "no other variant answered the same prompt",
}
_BLOCK = re.compile(r"(?:^|\n\n)\[(system|user|assistant)\] ")


@dataclass
class Collected:
    """The items a source gave, and its rows that gave none, by reason."""

    items: list[ItemInput] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def extend(self, other: Collected) -> None:
        self.items.extend(other.items)
        self.skipped.update(other.skipped)


def _shown(prompt: list[dict], answers: list[str], reference: str | None = None,
           details: list[dict] | None = None) -> dict:
    return {"prompt": prompt, "reference": reference,
            "answers": [{"label": x, "text": t} for x, t in zip(LABELS, answers, strict=False)],
            "details": details or []}


def prompt_messages(text: str) -> list[dict]:
    """An eval sheet's prompt text (``[role] content`` blocks) back as chat messages."""
    marks = list(_BLOCK.finditer(text))
    if not marks or marks[0].start() != 0:
        return [{"role": "user", "content": text}]
    out = []
    for m, nxt in zip(marks, [*marks[1:], None], strict=True):
        end = nxt.start() if nxt is not None else len(text)
        out.append({"role": m.group(1), "content": text[m.end():end]})
    return out


def items_from_eval_sheet(csv_path: str | Path, key_path: str | Path | None = None) -> Collected:
    """Items from the review sheet of ``tunelab eval MODEL --data FILE --review N``, still blind.

    Args:
        csv_path: the sheet (``review.csv``).
        key_path: its ``review_key.json``; default: beside the sheet.

    Returns:
        One item per sheet row: answers A, B, ... as on the sheet; hidden ``key``
        (letter -> model), the sheet's item number and row id.

    Raises:
        DataError: the key is missing or unreadable, or a row's item is not in it.
    """
    key_file = Path(key_path) if key_path is not None else Path(csv_path).parent / "review_key.json"
    if not key_file.is_file():
        raise DataError(f"no review key at {key_file}: the sheet's answers cannot be un-blinded",
                        hint="add the review_key.json written with the sheet beside it, or "
                             "pass its path")
    raw = key_file.read_bytes()
    try:
        key = json.loads(raw)
        letters, by_item = list(key["letters"]), dict(key["items"])
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{key_file} is not a review key (no 'letters' and 'items')",
                        hint="use the review_key.json written with the sheet by `tunelab eval "
                             "MODEL --data FILE --review N`") from None
    digest = hashlib.sha256(raw).hexdigest()[:KEY_DIGEST]
    table = read_table(csv_path)
    out, problems = Collected(), []
    for row, line in zip(table.rows, table.lines, strict=True):
        item = str(row.get("item") or "").strip()
        if item not in by_item:
            problems.append(f"{table.source}:{line}: item {item!r} is not in {key_file}")
            continue
        prompt = str(row.get("prompt") or "")
        reference = str(row.get("reference") or "").strip() or None
        answers = [str(row.get(f"answer_{x}") or "") for x in letters]
        out.items.append(ItemInput(
            "eval_sheet", f"eval:{digest}:item={item}",
            _shown(prompt_messages(prompt), answers, reference),
            {"key": by_item[item], "sheet_item": item, "row_id": str(row.get("id") or ""),
             "sheet": str(csv_path), "line": line}))
    if problems:
        raise DataError(f"{len(problems)} row(s) of {table.source} do not match its key",
                        findings=problems, hint="pass the key written with this sheet")
    return out


def _data_shown(example: Example, fmt: str | None) -> dict:
    msgs = [{"role": m.role, "content": m.content} for m in example.messages]
    if example.text is not None and not msgs:  # plain text: the text is what is judged
        return _shown([], [example.text])
    if fmt == "classification":
        return _shown(msgs[:-1], [], details=[{"name": "label", "value": msgs[-1]["content"]}])
    if example.rejected is not None:  # a preference pair: A is the chosen answer
        return _shown(msgs[:-1], [msgs[-1]["content"], example.rejected],
                      details=[{"name": "chosen", "value": "A"}])
    if msgs and msgs[-1]["role"] == "assistant":
        return _shown(msgs[:-1], [msgs[-1]["content"]])
    return _shown(msgs, [])


def items_from_data_file(path: str | Path) -> Collected:
    """One item per readable row of a training data file (any format tunelab reads).

    Rows with errors (as ``tunelab data check`` reports them) give no item and are
    counted under ``row_has_errors``.

    Returns:
        Items with hidden ``row`` (the row as read), ``line``, ``file`` and ``format``.

    Raises:
        DataError: the file is missing or unreadable.
    """
    examples, _ = check_file(path)
    rows: dict[int, object] = {line: row for line, row, _ in read_located(Path(path)) if line}
    out = Collected()
    name = Path(path).name
    for ex in examples:
        row = rows.get(ex.line)
        if not isinstance(row, dict):  # formats read objects only: cannot happen, but say so
            continue
        fmt = detect_format(row)
        digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:ROW_DIGEST]
        out.items.append(ItemInput(
            "data", f"data:{name}:{ex.line}:{digest}", _data_shown(ex, fmt),
            {"row": row, "line": ex.line, "file": str(path), "format": fmt}))
    if len(rows) > len(out.items):  # unparsable lines and rows with errors
        out.skipped["row_has_errors"] = len(rows) - len(out.items)
    return out


def logged_messages(prompt: str, endpoint: str | None) -> list[dict] | None:
    """A logged prompt as messages: chat JSON as is, a completions text as one user turn."""
    if endpoint == "completions":
        return [{"role": "user", "content": prompt}]
    try:
        msgs = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(msgs, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in msgs):
        return None
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _log_item(source: str, request_id: str, endpoint: str | None, prompt: str, answer: str,
              hidden: dict) -> ItemInput | None:
    msgs = logged_messages(prompt, endpoint)
    if msgs is None:
        return None
    return ItemInput(source, f"log:{request_id}", _shown(msgs, [answer]),
                     {"request_id": request_id, **hidden})


def items_from_log(db: Database, sample: int, seed: int, since: datetime | None = None,
                   model: str | None = None) -> Collected:
    """A seeded sample of answered requests whose text the log kept.

    Args:
        db: the open database.
        sample: requests to draw (all when there are fewer).
        seed: the draw's seed.
        since, model: only requests from then on, or answered by this model.

    Returns:
        Items with hidden ``request_id``, ``model``, ``experiment``, ``variant``;
        ``skipped["text_not_logged"]`` counts the answered requests (before sampling)
        that could not be drawn because their text was not kept.
    """
    ids, without = answered_request_ids(db, since, model)
    chosen = sorted(random.Random(seed).sample(ids, min(sample, len(ids))))
    out = Collected()
    if without:
        out.skipped["text_not_logged"] += without
    for r in requests_by_ids(db, chosen):
        assert r.prompt is not None and r.answer is not None  # chosen among rows with text
        item = _log_item("log_sample", r.request_id, r.endpoint, r.prompt, r.answer,
                         {"model": r.model, "experiment": r.experiment, "variant": r.variant})
        if item is None:
            out.skipped["unreadable_prompt"] += 1
        else:
            out.items.append(item)
    return out


def is_negative(fb: FeedbackItem) -> bool:
    """A down rating, or a score of ``NEGATIVE_SCORE`` or less."""
    return fb.rating == "down" or (fb.score is not None and fb.score <= NEGATIVE_SCORE)


def _unusable(fb: FeedbackItem) -> str | None:
    if not fb.found:
        return "not_in_log"
    if fb.status_code != OK_STATUS:
        return "failed_request"
    if fb.prompt is None or fb.answer is None:
        return "text_not_logged"
    return None


def items_from_negative_feedback(db: Database, since: datetime | None = None) -> Collected:
    """Every logged request with negative feedback (one item per request).

    Returns:
        Items with hidden ``request_id``, ``model``, ``experiment``, ``variant`` and the
        ``feedback_ids`` on it; feedback rows that name no usable request are counted.
    """
    out = Collected()
    by_request: dict[str, list[FeedbackItem]] = {}
    for fb in feedback_with_requests(db, since):
        if not is_negative(fb):
            continue
        reason = _unusable(fb)
        if reason is not None:
            out.skipped[reason] += 1
            continue
        by_request.setdefault(fb.response_id, []).append(fb)
    for rid, fbs in by_request.items():
        f = fbs[0]
        assert f.prompt is not None and f.answer is not None  # _unusable checked both
        item = _log_item("log_negative", rid, f.endpoint, f.prompt, f.answer,
                         {"model": f.model, "experiment": f.experiment, "variant": f.variant,
                          "feedback_ids": [x.feedback_id for x in fbs]})
        if item is None:
            out.skipped["unreadable_prompt"] += len(fbs)
        else:
            out.items.append(item)
    return out


def items_from_experiment(db: Database, experiment: str, limit: int | None,
                          seed: int) -> Collected:
    """Blinded A/B pairs: one prompt answered by two variants of an experiment.

    For each logged prompt (the same messages) and each two variants that answered it,
    the first answer of each makes a pair; ``limit`` pairs are drawn (seeded), and each
    shows its two answers under the letters in a seeded random order.

    Returns:
        Items with hidden ``key`` (letter -> variant), ``models`` and ``request_ids``
        (letter -> each), ``experiment``; empty when no prompt was answered by two
        variants (``skipped["unpaired"]`` counts the requests).
    """
    ids, without = answered_request_ids(db, experiment=experiment)
    out = Collected()
    if without:
        out.skipped["text_not_logged"] += without
    groups: dict[str, dict[str, tuple[list[dict], RequestRecord]]] = {}
    for r in requests_by_ids(db, ids):
        if not r.variant:
            continue
        assert r.prompt is not None
        msgs = logged_messages(r.prompt, r.endpoint)
        if msgs is None:
            out.skipped["unreadable_prompt"] += 1
            continue
        groups.setdefault(json.dumps([r.endpoint, msgs], sort_keys=True), {}).setdefault(
            r.variant, (msgs, r))
    pairs = []
    for variants in groups.values():
        if len(variants) < 2:
            out.skipped["unpaired"] += 1
        for a, b in combinations(sorted(variants), 2):
            pairs.append((variants[a], variants[b]))
    rng = random.Random(seed)
    if limit is not None and len(pairs) > limit:
        pairs = [pairs[i] for i in sorted(rng.sample(range(len(pairs)), limit))]
    for first, second in pairs:
        order = [first, second]
        rng.shuffle(order)
        msgs = order[0][0]
        recs = [r for _, r in order]
        ref_ids = sorted(r.request_id for r in recs)
        out.items.append(ItemInput(
            "experiment_pair", f"experiment:{experiment}:{ref_ids[0]}:{ref_ids[1]}",
            _shown(msgs, [r.answer or "" for r in recs]),
            {"key": {x: r.variant for x, r in zip(LABELS, recs, strict=False)},
             "models": {x: r.model for x, r in zip(LABELS, recs, strict=False)},
             "request_ids": {x: r.request_id for x, r in zip(LABELS, recs, strict=False)},
             "experiment": experiment}))
    return out


def feedback_digest(correction: str | None, rating: str | None, score: int | None,
                    comment: str | None) -> str:
    """A short hash of what a user said in a feedback row: it changes when any value does."""
    said = json.dumps([correction, rating, score, comment], ensure_ascii=False)
    return hashlib.sha256(said.encode()).hexdigest()[:FEEDBACK_DIGEST]


def items_from_feedback(db: Database, since: datetime | None = None) -> Collected:
    """Feedback rows with a correction or a negative rating, for feedback review.

    Returns:
        Items showing the conversation, the answer and (as details) what the user said;
        hidden ``feedback_id``, ``request_id``, ``model`` and the user's ``correction``.
    """
    out = Collected()
    for fb in feedback_with_requests(db, since):
        correction = (fb.correction or "").strip()
        if not correction and not is_negative(fb):
            out.skipped["no_signal"] += 1
            continue
        reason = _unusable(fb)
        if reason is not None:
            out.skipped[reason] += 1
            continue
        assert fb.prompt is not None and fb.answer is not None
        msgs = logged_messages(fb.prompt, fb.endpoint)
        if msgs is None:
            out.skipped["unreadable_prompt"] += 1
            continue
        said = [("rating", fb.rating), ("score", fb.score), ("correction", correction or None),
                ("comment", fb.comment)]
        details = [{"name": k, "value": str(v)} for k, v in said if v not in (None, "")]
        out.items.append(ItemInput(
            "feedback",
            f"feedback:{fb.feedback_id}:"
            f"{feedback_digest(fb.correction, fb.rating, fb.score, fb.comment)}",
            _shown(msgs, [fb.answer], details=details),
            {"feedback_id": fb.feedback_id, "request_id": fb.response_id, "model": fb.model,
             "correction": correction or None}))
    return out
