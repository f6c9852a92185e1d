"""`tunelab review export`: a project's agreed and adjudicated items out, with provenance.

``export_project`` reads the project's final items (``tunelab.db.review.final_items``:
open and disagreed items never leave), turns them into records
(``tunelab.review.export``), and writes, each file whole or not at all:

* the records: rows and pairs as JSONL (the formats ``tunelab.data.load`` reads), verdicts
  and feedback decisions as one JSON document;
* ``<out>.provenance.json``: the project, the kind, how many items went out and which,
  the items left out by reason, the items still in review, the reviewers, adjudicators
  and guideline versions behind them, how many were agreed and how many adjudicated,
  the time and the tunelab version.

The export is then recorded in the database (``record_export``); a feedback export
also marks the feedback rows approved or rejected, which is what ``tunelab feedback
export`` reads. This module prints nothing: ``tunelab.cli.review_data`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tunelab import __version__
from tunelab.db.database import open_database
from tunelab.db.review import (
    ADJUDICATED,
    AGREED,
    DISAGREED,
    OPEN,
    final_items,
    get_project,
    mark_feedback_reviewed,
    record_export,
    status_counts,
)
from tunelab.errors import DataError, UsageError
from tunelab.files import write_json_atomic, write_text_atomic
from tunelab.review.export import EXPORTERS, SKIP_REASONS, Exported

EXPORT_KINDS = tuple(EXPORTERS)
SUFFIX = {"rows": ".jsonl", "pairs": ".jsonl", "verdicts": ".json", "feedback": ".json"}
PROJECT_KINDS = {"rows": ("output", "data", "feedback"), "pairs": ("output", "data", "feedback"),
                 "verdicts": ("output",), "feedback": ("feedback",)}
PROVENANCE_SUFFIX = ".provenance.json"


@dataclass
class ReviewExportResult:
    """What one export wrote."""

    project: str
    kind: str
    out: Path
    provenance_path: Path
    records: int
    items: int
    skipped: dict[str, int]
    in_review: dict[str, int]
    export_id: int
    summary: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    feedback_marked: int | None = None

    def as_dict(self) -> dict:
        return {"project": self.project, "kind": self.kind, "out": str(self.out),
                "provenance": str(self.provenance_path), "records": self.records,
                "items": self.items, "skipped": self.skipped, "in_review": self.in_review,
                "export_id": self.export_id, "summary": self.summary, "notes": self.notes,
                "feedback_marked": self.feedback_marked}


def provenance(project: str, kind: str, got: Exported, skipped: dict[str, int],
               in_review: dict[str, int], guideline_version: int) -> dict:
    """Who and what produced an export: the document written beside it."""
    items = got.items
    return {
        "project": project, "kind": kind, "records": len(got.records), "items": len(items),
        "item_refs": {str(i.item_id): i.source_ref for i in items},
        "skipped": {k: {"count": n, "reason": SKIP_REASONS[k]} for k, n in skipped.items()},
        "in_review": in_review,
        "reviewers": sorted({r for i in items for r in i.reviewers}),
        "adjudicators": sorted({i.adjudicator for i in items if i.adjudicator}),
        "guideline_versions": sorted({v for i in items for v in i.guideline_versions}),
        "current_guideline_version": guideline_version,
        "agreed": sum(i.how == AGREED for i in items),
        "adjudicated": sum(i.how == ADJUDICATED for i in items),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "tunelab_version": __version__,
    }


def _body(kind: str, got: Exported) -> str:
    if SUFFIX[kind] == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in got.records)
    key = "verdicts" if kind == "verdicts" else "decisions"
    return json.dumps({**got.summary, key: got.records}, ensure_ascii=False, indent=2) + "\n"


def export_project(project: str, kind: str, out: str | Path,
                   db_url: str | None = None) -> ReviewExportResult:
    """Export a project's agreed and adjudicated items as ``kind``.

    Args:
        project: the project's name.
        kind: one of ``EXPORT_KINDS`` (rows, pairs, verdicts, feedback).
        out: the file to write (``.jsonl`` for rows and pairs, ``.json`` otherwise); the
            provenance goes to ``<out>.provenance.json``.
        db_url: the database (None: the default SQLite file under the tunelab home).

    Returns:
        What was written, what was left out and why, and the export's id.

    Raises:
        UsageError: an unknown kind, a kind that does not fit the project, a file name
            with the wrong suffix, or nothing to export (no final items, or none that
            gives a record).
        DataError: the files cannot be written.
        DatabaseError: the database cannot be opened or read.
    """
    if kind not in EXPORTERS:
        raise UsageError(f"export kind {kind!r} is not one of {', '.join(EXPORT_KINDS)}")
    path = Path(out)
    if path.suffix.lower() != SUFFIX[kind]:
        raise UsageError(f"--out {path}: a {kind} export is written as {SUFFIX[kind]}",
                         hint=f"name the file like {path.with_suffix(SUFFIX[kind]).name}")
    db = open_database(db_url)
    try:
        proj = get_project(db, project)
        if proj.kind not in PROJECT_KINDS[kind]:
            raise UsageError(f"project {proj.name!r} is a {proj.kind} project; a {kind} "
                             f"export needs a {' or '.join(PROJECT_KINDS[kind])} project")
        counts = status_counts(db, proj)
        in_review = {OPEN: counts[OPEN], DISAGREED: counts[DISAGREED]}
        got = EXPORTERS[kind](final_items(db, proj))
        skipped = {k: got.skipped[k] for k in SKIP_REASONS if got.skipped[k]}
        if not got.records:
            why = "; ".join(f"{n} {SKIP_REASONS[k]}" for k, n in skipped.items())
            raise UsageError(
                f"nothing to export from {proj.name!r} as {kind}: "
                f"{counts[AGREED] + counts[ADJUDICATED]} item(s) agreed or adjudicated"
                + (f" ({why})" if why else "")
                + f", {counts[OPEN]} open, {counts[DISAGREED]} waiting for adjudication",
                hint="review and adjudicate items in `tunelab review serve` first")
        doc = provenance(proj.name, kind, got, skipped, in_review, proj.guideline_version)
        write_text_atomic(path, _body(kind, got), error=DataError)
        prov_path = path.with_name(path.name + PROVENANCE_SUFFIX)
        marked = None
        if kind == "feedback":
            marked = mark_feedback_reviewed(db, [(r["feedback_id"], r["status"], r["correction"])
                                                 for r in got.records])
            doc["feedback_marked"] = marked
            if marked < len(got.records):
                got.notes.append(f"{len(got.records) - marked} feedback row(s) are no longer "
                                 "in the database and were not marked")
        doc["notes"] = got.notes
        write_json_atomic(prov_path, doc, error=DataError)
        export_id = record_export(db, proj, kind, str(path.resolve()), len(got.items), doc)
    finally:
        db.close()
    return ReviewExportResult(proj.name, kind, path, prov_path, len(got.records),
                              len(got.items), skipped, in_review, export_id, got.summary,
                              got.notes, marked)
