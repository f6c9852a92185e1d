"""`tunelab review add`: items from a file, the request log, an experiment or feedback.

A FILE is a review sheet of ``tunelab eval MODEL --data FILE --review N`` when it is a
CSV file with a ``review_key.json`` beside it (or a key is given), else a training data
file. ``--from-log`` samples answered
requests, ``--negative`` takes every request with negative feedback, ``--experiment``
pairs two variants' answers to the same prompt, ``--feedback`` takes feedback rows to
approve or reject. Several sources may be given at once. Each source fits one project
kind (``SOURCE_KINDS``): training rows go to a data project, feedback to a feedback
project, everything else to an output project; a mismatch is refused before anything
is added. Items already in the project (the same ``source_ref``) are skipped and counted.

This module prints nothing: ``tunelab.cli.review_data`` does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tunelab.db.database import open_database
from tunelab.db.review import add_items, get_project
from tunelab.errors import UsageError
from tunelab.review.sources import (
    Collected,
    items_from_data_file,
    items_from_eval_sheet,
    items_from_experiment,
    items_from_feedback,
    items_from_log,
    items_from_negative_feedback,
)

KEY_FILE = "review_key.json"  # what `tunelab eval ... --review N` writes beside review.csv
SOURCE_KINDS = {"eval_sheet": "output", "log_sample": "output", "log_negative": "output",
                "experiment_pair": "output", "data": "data", "feedback": "feedback"}


@dataclass
class AddResult:
    """What one `review add` found and added."""

    project: str
    kind: str
    sources: list[str]
    found: int
    added: int
    already_there: int
    not_added: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"project": self.project, "kind": self.kind, "sources": self.sources,
                "found": self.found, "added": self.added, "already_there": self.already_there,
                "not_added": self.not_added}


def _is_sheet(file: Path, key_path: str | Path | None) -> bool:
    return key_path is not None or (file.suffix.lower() == ".csv"
                                    and (file.parent / KEY_FILE).is_file())


def add_to_project(project: str, file: str | Path | None = None, *, db_url: str | None = None,
                   from_log: bool = False, sample: int | None = None, negative: bool = False,
                   experiment: str | None = None, feedback: bool = False,
                   since: datetime | None = None, seed: int = 0, model: str | None = None,
                   key_path: str | Path | None = None) -> AddResult:
    """Add items to a review project from the sources named.

    Args:
        project: the project's name.
        file: a review sheet (``review.csv`` with its key beside it) or a data file.
        db_url: the database (None: the default SQLite file under the tunelab home).
        from_log: sample ``sample`` answered requests of the log (``since``, ``model``).
        sample: how many requests to sample (required with ``from_log``); with
            ``experiment``, how many pairs at most (None: all).
        negative: every request with negative feedback (``since``).
        experiment: blinded pairs of this experiment's variants.
        feedback: feedback rows with a correction or a negative rating (``since``).
        since: only requests or feedback from then on.
        seed: seeds the sample and the order of a pair's answers.
        model: only requests answered by this model (``from_log``).
        key_path: the sheet's key when it is not beside the sheet.

    Returns:
        The counts: found, added, already in the project, and rows that gave no item.

    Raises:
        UsageError: no source, a source that does not fit the project's kind, a missing
            ``sample``, or an experiment with no pairs.
        DataError: the file cannot be read.
        DatabaseError: the database cannot be opened or read.
    """
    if file is None and not (from_log or negative or experiment or feedback):
        raise UsageError("nothing to add: no FILE and no source option",
                         hint="give a FILE, or --from-log --sample N, --negative, "
                              "--experiment NAME or --feedback")
    if from_log and sample is None:
        raise UsageError("--from-log needs --sample N (how many logged requests to review)",
                         hint="add --sample 100, say")
    db = open_database(db_url)
    try:
        proj = get_project(db, project)
        wanted: list[str] = []
        path = Path(file) if file is not None else None
        if path is not None:
            wanted.append("eval_sheet" if _is_sheet(path, key_path) else "data")
        wanted += [s for s, on in (("log_sample", from_log), ("log_negative", negative),
                                   ("experiment_pair", experiment), ("feedback", feedback)) if on]
        for source in wanted:
            if SOURCE_KINDS[source] != proj.kind:
                raise UsageError(
                    f"project {proj.name!r} is a {proj.kind} project and {source} items belong "
                    f"in a {SOURCE_KINDS[source]} project; nothing was added",
                    hint=f"create one with `tunelab review project add NAME --kind "
                         f"{SOURCE_KINDS[source]} --guideline GUIDE.md` and add them there")
        got = Collected()
        if path is not None:
            got.extend(items_from_eval_sheet(path, key_path) if wanted[0] == "eval_sheet"
                       else items_from_data_file(path))
        if from_log:
            assert sample is not None  # checked above
            got.extend(items_from_log(db, sample, seed, since, model))
        if negative:
            got.extend(items_from_negative_feedback(db, since))
        if experiment:
            pairs = items_from_experiment(db, experiment, sample, seed)
            if not pairs.items:
                raise UsageError(
                    f"experiment {experiment!r} has no pairs to review: a pair needs the same "
                    "prompt answered by two variants (with the text logged); nothing was added",
                    hint="send the same prompts to the experiment until both variants have "
                         "answered them, or check the name with `tunelab experiment report`")
            got.extend(pairs)
        if feedback:
            got.extend(items_from_feedback(db, since))
        added, skipped = add_items(db, proj, got.items)
    finally:
        db.close()
    return AddResult(proj.name, proj.kind, wanted, len(got.items), added, skipped,
                     dict(sorted(Counter(got.skipped).items())))
