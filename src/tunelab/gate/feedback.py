"""The data gate for rows made from user feedback, before anything trains on them.

Feedback text was typed by users of a server, so this gate is stricter than `tunelab
data check` in one respect: likely personal data (``tunelab.gate.pii``) is an error, not
a warning; a model trained on it can repeat it to other users. Each file gets:

==================  ========  ===========================================================
code                severity  meaning
==================  ========  ===========================================================
(data check codes)  as there  the structural check, duplicates and ``too_few_rows`` of
                              ``check_data``, for files whose row shape the gate reads
pii_<kind>          error     likely personal data or a secret in the row
near_duplicate      warning   (pairs the gate cannot read yet) nearly the same pair again
too_few_rows        error     (likewise) fewer than ``MIN_USABLE_ROWS`` rows
leak_exact          error     the row's prompt is a held-out prompt (case and spacing aside)
leak_near           error     the row's prompt nearly equals a held-out prompt
==================  ========  ===========================================================

Rows are compared with the held-out set by their user turns only: a shared system
prompt would make every row look alike, and the answer is what feedback changes.

This module knows nothing of the database or of how the rows were made; it reads the
files it is given and returns findings. It prints nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.data.example import Example
from tunelab.data.findings import ERROR, WARNING, Finding
from tunelab.data.formats import detect_format
from tunelab.data.load import load_examples
from tunelab.data.table import read_table, row_text, text_columns
from tunelab.errors import DataError
from tunelab.gate.check import MIN_USABLE_ROWS, check_data, string_fields
from tunelab.gate.dedup import DEFAULT_THRESHOLD, find_near_duplicates
from tunelab.gate.leakage import find_leakage
from tunelab.gate.pii import KINDS, PiiMatch, find_pii, mask

HELDOUT = "held-out"  # the split name of the evaluation rows in leakage findings


@dataclass
class GatedFile:
    """The gate's findings on one written file."""

    path: str
    rows: int
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.is_error for f in self.findings)

    def as_dict(self) -> dict:
        errors = sum(f.is_error for f in self.findings)
        return {"path": self.path, "rows": self.rows, "ok": self.ok, "errors": errors,
                "warnings": len(self.findings) - errors, "notes": self.notes,
                "findings": [{"line": f.line, "field": f.field, "code": f.code,
                              "severity": f.severity, "message": f.message}
                             for f in self.findings]}


def heldout_prompts(path: str | Path) -> list[str]:
    """The prompt text of each row of an evaluation file, as leakage compares it.

    Training-format files (chats, Alpaca, classification tables, plain text) give their
    user turns; any other table gives its text columns but ``label``.

    Raises:
        DataError: the file cannot be read at all.
    """
    try:
        return [_user_text(e) for e in load_examples(path)]
    except DataError:
        table = read_table(path)
        cols = text_columns(table, None, exclude=["label"])
        return [row_text(r, cols) for r in table.rows]


def _user_text(example: Example) -> str:
    if example.text is not None:
        return example.text
    return "\n".join(m.content for m in example.messages if m.role == "user")


def gate_file(path: str | Path, prompts: Sequence[str], heldout: Sequence[str] | None,
              threshold: float = DEFAULT_THRESHOLD) -> GatedFile:
    """Run the feedback gate on one written JSON Lines file.

    Args:
        path: the file (one JSON object per line, as the export writes them).
        prompts: each row's user-turn text, in file order (what leakage compares).
        heldout: the held-out prompts (``heldout_prompts``); None: leakage not checked.
        threshold: the 5-gram Jaccard of near duplicates and near leaks.

    Returns:
        The findings; an empty file gets none.

    Raises:
        DataError: the file cannot be read.
    """
    rows = _read_lines(Path(path))
    out = GatedFile(str(path), len(rows))
    if not rows:
        return out
    first = next(iter(rows.values()))
    if detect_format(first) is not None:
        result = check_data(path, "auto", None, near_duplicates=True, threshold=threshold)
        out.findings += [f for f in result.findings if not f.code.startswith("pii_")]
    else:
        out.notes.append("the data gate cannot read rows of this shape yet; checked for "
                         "personal data, near duplicates, row count and leakage only")
        out.findings += _near_duplicates(str(path), rows, threshold)
        if len(rows) < MIN_USABLE_ROWS:
            out.findings.append(Finding(
                str(path), 0, None, "too_few_rows",
                f"only {len(rows)} row(s); at least {MIN_USABLE_ROWS} are needed for a "
                "fine-tune to learn more than the rows by heart; gather more feedback", ERROR))
    out.findings += _pii(str(path), rows)
    if heldout is None:
        out.notes.append("leakage was not checked: no held-out set was given")
    else:
        out.findings += _leaks(str(path), list(rows), prompts, heldout, threshold)
    out.findings.sort(key=lambda f: f.line)
    return out


def _read_lines(path: Path) -> dict[int, dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    return {n: json.loads(line) for n, line in enumerate(text.splitlines(), 1) if line.strip()}


def _pii(source: str, rows: dict[int, dict]) -> list[Finding]:
    out = []
    for line, row in rows.items():
        for where, text in string_fields(row):
            first: dict[str, PiiMatch] = {}
            for m in find_pii(text):
                first.setdefault(m.kind, m)  # one finding per kind and field: the first match
            for match in first.values():
                out.append(Finding(
                    source, line, where, f"pii_{match.kind}",
                    f"looks like {KINDS[match.kind]} ({mask(match)}) in text a user gave; "
                    "a model trained on it can repeat it to anyone: drop or redact this "
                    "feedback, then export again", ERROR))
    return out


def _near_duplicates(source: str, rows: dict[int, dict], threshold: float) -> list[Finding]:
    lines = list(rows)
    # the texts only: the keys every row shares would make all rows look alike
    texts = ["\n".join(text for _, text in string_fields(rows[n])) for n in lines]
    out = []
    for cluster in find_near_duplicates(texts, threshold):
        for i in cluster[1:]:
            out.append(Finding(
                source, lines[i], None, "near_duplicate",
                f"nearly the same row as line {lines[cluster[0]]} (character 5-gram Jaccard "
                f">= {threshold}); near copies weigh one piece of feedback more than the "
                "others", WARNING))
    return out


def _leaks(source: str, lines: list[int], prompts: Sequence[str], heldout: Sequence[str],
           threshold: float) -> list[Finding]:
    if len(prompts) != len(lines):
        raise ValueError(f"{len(prompts)} prompts for {len(lines)} rows of {source}")
    out = []
    for leak in find_leakage([(HELDOUT, list(heldout)), (source, list(prompts))], True,
                             threshold):
        what = ("the same prompt as" if leak.kind == "exact"
                else f"nearly the same prompt (similarity {leak.similarity:.2f}) as")
        out.append(Finding(
            source, lines[leak.row_b], None, f"leak_{leak.kind}",
            f"{what} held-out row {leak.row_a + 1}; training on it would inflate the score "
            "the retrained model is judged by: drop this feedback or evaluate on another set",
            ERROR))
    return out
