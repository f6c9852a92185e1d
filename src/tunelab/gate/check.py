"""The data gate's check: every problem of one data file, each with line, field and code.

The structural pass is ``tunelab.data.load.check_file`` (invalid JSON or UTF-8, rows that
are not objects, missing or malformed fields, unknown roles and keys, empty answers, bad
weights, mixed formats, and the columns the format does not read as one
``unused_columns`` warning for the file), so training and checking can never disagree
about a row. On
top of it this module adds what needs the whole file or a tokenizer:

==================  ========  ===============================================================
code                severity  meaning
==================  ========  ===============================================================
too_few_rows        error     fewer than ``MIN_USABLE_ROWS`` rows can be trained on
no_user             warning   a conversation without a user turn
no_system           warning   no system turn while other rows of the file have one
too_long            warning   longer than ``max_length`` tokens with the chat template
exact_duplicate     warning   the same text as an earlier row (case and spacing aside)
near_duplicate      warning   nearly the same text as an earlier row (5-gram Jaccard)
conflicting_labels  warning   classification: the same text with another label earlier
pii_email ...       warning   likely personal data: ``pii_`` + a kind of ``pii.KINDS``
==================  ========  ===============================================================

Each row read is either accepted (it became an example) or rejected (it has an error);
``CheckResult`` counts both, by ``Finding.row_lines``: a finding on a field's own line in a
JSON document, or one for a column that every row lacks, still counts for its rows. In
JSON documents the findings added here point at their field's line too. This module
receives a tokenizer object and never loads a model; it prints nothing and sets no exit
codes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The schema's data.max_length default, so `data check` and `train` agree on too long.
from tunelab.config.schema import DEFAULT_MAX_LENGTH
from tunelab.data.example import Example
from tunelab.data.findings import ERROR, WARNING, Finding
from tunelab.data.formats import detect_format
from tunelab.data.load import check_file
from tunelab.data.readers import FieldLines, read_located
from tunelab.data.token_lengths import token_lengths
from tunelab.data.tool_text import turn_text
from tunelab.gate.dedup import DEFAULT_THRESHOLD, find_exact_duplicates, find_near_duplicates
from tunelab.gate.pii import KINDS, find_pii, mask

# Below this many usable rows a fine-tune mostly memorizes; the floor.
MIN_USABLE_ROWS = 10


@dataclass
class CheckResult:
    """Everything ``check_data`` found in one file.

    Args:
        source: the file path as given.
        format: the format the rows were read as (``None`` when no row had one).
        rows_read: rows found in the file (``accepted + rejected``).
        accepted: rows that became examples.
        rejected: rows with at least one error.
        findings: every finding, file-level ones (line 0) first, then by line.
        examples: the accepted rows, in file order.
        token_lengths: tokens of each example with the chat template; ``None`` when no
            tokenizer was given.
        max_length: the length in tokens beyond which a row is ``too_long``.
        columns: per top-level field: rows where it is ``present``, ``missing`` (absent
            or null) and ``empty`` (blank text or empty list).
        notes: checks that were not run, and why.
    """

    source: str
    format: str | None
    rows_read: int
    accepted: int
    rejected: int
    findings: list[Finding]
    examples: list[Example] = field(repr=False)
    token_lengths: list[int] | None
    max_length: int
    columns: dict[str, dict[str, int]]
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.is_error]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.is_error]

    @property
    def ok(self) -> bool:
        """Whether the file has no errors (warnings allowed)."""
        return not any(f.is_error for f in self.findings)

    def counts(self) -> dict[str, int]:
        """Findings per code, most frequent first."""
        return dict(Counter(f.code for f in self.findings).most_common())

    def as_dict(self) -> dict:
        """The machine-readable report; each finding carries ``line`` (0: the whole file)."""
        lengths = self.token_lengths
        return {
            "path": self.source, "format": self.format, "ok": self.ok,
            "rows_read": self.rows_read, "accepted": self.accepted, "rejected": self.rejected,
            "errors": len(self.errors), "warnings": len(self.warnings),
            "counts": self.counts(),
            "tokens": None if lengths is None else {
                "max_length": self.max_length,
                "over_max_length": sum(n > self.max_length for n in lengths),
                **length_stats(lengths)},
            "columns": self.columns,
            "notes": self.notes,
            "findings": [{"line": f.line, "field": f.field, "code": f.code,
                          "severity": f.severity, "message": f.message}
                         for f in self.findings],
        }


def length_stats(values: list[int]) -> dict[str, float]:
    """``min``, ``median``, ``p95``, ``max``, ``mean`` and ``total`` of a list (0s if empty)."""
    if not values:
        return {"min": 0, "median": 0, "p95": 0, "max": 0, "mean": 0.0, "total": 0}
    ordered = sorted(values)
    n = len(ordered)
    return {"min": ordered[0], "median": ordered[n // 2],
            "p95": ordered[min(n - 1, (95 * n) // 100)], "max": ordered[-1],
            "mean": round(sum(ordered) / n, 2), "total": sum(ordered)}


def check_data(path: str | Path, format: str = "auto", tokenizer: Any = None,
               template: str | None = None, max_length: int = DEFAULT_MAX_LENGTH,
               near_duplicates: bool = True, threshold: float = DEFAULT_THRESHOLD,
               min_rows: int = MIN_USABLE_ROWS) -> CheckResult:
    """Read a whole data file and report every problem in it.

    Args:
        path: a ``.jsonl``, ``.json``, ``.csv``, ``.tsv`` or ``.parquet`` file.
        format: one of ``FORMATS``, or ``"auto"`` to detect it from the first row.
        tokenizer: a Hugging Face tokenizer for token lengths with the chat template;
            ``None`` skips the length check (noted in ``notes``).
        template: the chat template, as for ``resolve_chat_template``.
        max_length: tokens beyond which a row is reported ``too_long``.
        near_duplicates: look for near duplicates too (exact ones are always reported).
        threshold: the 5-gram Jaccard similarity at which rows are near duplicates.
        min_rows: fewer usable rows than this is a ``too_few_rows`` error.

    Returns:
        The result; bad content is reported in it, never raised.

    Raises:
        DataError: the file is missing or unreadable, ``format`` is unknown, a
            conversation needs a chat template and the tokenizer has none, or
            ``threshold`` is out of range.
    """
    source = str(path)
    examples, findings = check_file(path, format)
    bad_lines = {line for f in findings if f.is_error for line in f.row_lines}
    # A row that parsed but shares its line with an error (the last row of a JSON array
    # that is never closed) is rejected too: each row is accepted or rejected, not both.
    examples = [e for e in examples if e.line not in bad_lines]
    rejected = len(bad_lines)
    rows, columns, detected, field_lines = _raw_pass(Path(path), format)
    fmt = detected if format == "auto" else format
    wanted = {e.line for e in examples}
    rows = {line: row for line, row in rows.items() if line in wanted}
    result = CheckResult(source, fmt, len(examples) + rejected, len(examples), rejected,
                         findings, examples, None, max_length, columns)
    found: list[Finding] = []
    found += _turn_findings(examples)
    if tokenizer is not None:
        result.token_lengths = token_lengths(tokenizer, examples, template)
        found += _length_findings(examples, result.token_lengths, max_length)
    else:
        result.notes.append("token lengths were not checked: no tokenizer was given")
    found += _duplicate_findings(examples, fmt, near_duplicates, threshold)
    if not near_duplicates:
        result.notes.append("near duplicates were not looked for")
    found += _pii_findings(source, rows)
    found = [field_lines[f.line].place(f) if f.line in field_lines else f for f in found]
    # No rows, or a problem every row shares (a missing column), already says it all.
    whole_file = any(f.code == "empty_file" or (f.line == 0 and f.rows and f.is_error)
                     for f in findings)
    if len(examples) < min_rows and not whole_file:
        found.append(Finding(
            source, 0, None, "too_few_rows",
            f"only {len(examples)} usable row(s) of {result.rows_read}; at least {min_rows} "
            "are needed for a fine-tune to learn more than the rows by heart; add examples "
            "or fix the rejected rows", ERROR))
    result.findings = sorted(findings + found, key=lambda f: f.line)
    return result


def _raw_pass(path: Path, format: str) -> tuple[dict[int, dict], dict[str, dict[str, int]],
                                                str | None, dict[int, FieldLines]]:
    """Parsed object rows by line, per-field presence counts, the first detected format, and
    the field lines of the rows of a JSON document."""
    rows: dict[int, dict] = {}
    field_lines: dict[int, FieldLines] = {}
    present: Counter = Counter()
    empty: Counter = Counter()
    detected = None
    for line, row, lines in read_located(path):
        if not isinstance(row, dict):
            continue
        rows[line] = row
        if lines is not None:
            field_lines[line] = lines
        if detected is None and format == "auto":
            detected = detect_format(row)
        for key, value in row.items():
            if value is None:
                continue
            present[key] += 1
            if (isinstance(value, str) and not value.strip()) or value == [] or value == {}:
                empty[key] += 1
    total = len(rows)
    columns = {key: {"present": present[key], "missing": total - present[key],
                     "empty": empty[key]}
               for key in dict.fromkeys(k for r in rows.values() for k in r)}
    return rows, columns, detected, field_lines


def _turn_findings(examples: list[Example]) -> list[Finding]:
    """``no_user`` always; ``no_system`` only where other rows of the file have a system turn."""
    out = []
    chats = [e for e in examples if e.text is None]
    with_system = sum(any(m.role == "system" for m in e.messages) for e in chats)
    for e in chats:
        roles = {m.role for m in e.messages}
        if "system" not in roles and 0 < with_system < len(chats):
            out.append(Finding(
                e.source, e.line, "messages", "no_system",
                f"the row has no system message while {with_system} of {len(chats)} rows "
                "have one; the model then learns this answer without the instructions the "
                "others get (and the chat template may add its own default); add the system "
                "message", WARNING))
        if "user" not in roles:
            out.append(Finding(
                e.source, e.line, "messages", "no_user",
                "the row has no user message, so the answer replies to nothing a user will "
                "send; add the user turn it answers", WARNING))
    return out


def _length_findings(examples: list[Example], lengths: list[int],
                     max_length: int) -> list[Finding]:
    return [Finding(
        e.source, e.line, None, "too_long",
        f"{n} tokens with the chat template, over the max length of {max_length}; training "
        "drops, truncates or refuses such rows (data.overlength); shorten or split the row, "
        "or raise data.max_length", WARNING)
        for e, n in zip(examples, lengths, strict=True) if n > max_length]


def _compare_text(example: Example) -> str:
    """The text rows are compared by: every non-system turn with its tool calls (a shared
    system prompt would make all rows look alike; two rows that differ only in a call's
    arguments are not duplicates), or the plain text."""
    if example.text is not None:
        return example.text
    return "\n".join(turn_text(m) for m in example.messages if m.role != "system")


def _duplicate_findings(examples: list[Example], fmt: str | None, near: bool,
                        threshold: float) -> list[Finding]:
    texts = [_compare_text(e) for e in examples]
    out = []
    same_as: dict[int, int] = {}  # row index -> index of the first row with its exact text
    for cluster in find_exact_duplicates(texts):
        first = examples[cluster[0]]
        for i in cluster[1:]:
            same_as[i] = cluster[0]
            out.append(Finding(
                first.source, examples[i].line, None, "exact_duplicate",
                f"the same text as line {first.line} (case and spacing aside); duplicates "
                "weigh a row more than the others; remove it (`tunelab data clean FILE -o OUT` drops "
                "duplicates)",
                WARNING))
    if near:
        for cluster in find_near_duplicates(texts, threshold):
            head = cluster[0]  # a row index (``first`` above is an example)
            for i in cluster[1:]:
                if same_as.get(i, i) == same_as.get(head, head):
                    continue  # already an exact duplicate of the cluster's first row
                out.append(Finding(
                    examples[i].source, examples[i].line, None, "near_duplicate",
                    f"nearly the same text as line {examples[head].line} (character 5-gram "
                    f"Jaccard >= {threshold}, {len(cluster)} rows alike); keep one of them "
                    "(`tunelab data clean FILE --near -o OUT` drops the others)", WARNING))
    if fmt == "classification":
        out += _conflicting_labels(examples)
    return out


def _conflicting_labels(examples: list[Example]) -> list[Finding]:
    first: dict[str, tuple[str, int]] = {}
    out = []
    for e in examples:
        text, label = e.messages[0].content.strip(), e.messages[-1].content.strip()
        seen = first.setdefault(text, (label, e.line))
        if seen[0] != label:
            out.append(Finding(
                e.source, e.line, "label", "conflicting_labels",
                f"the same text has label {seen[0]!r} on line {seen[1]} and {label!r} here; "
                "the model cannot learn both: fix the label or remove one row", WARNING))
    return out


def _pii_findings(source: str, rows: dict[int, dict]) -> list[Finding]:
    """One finding per row, field and kind of likely personal data."""
    out = []
    for line, row in rows.items():
        for where, text in string_fields(row, ""):
            matches = find_pii(text)
            if not matches:
                continue
            for kind in dict.fromkeys(m.kind for m in matches):
                of_kind = [m for m in matches if m.kind == kind]
                more = f" and {len(of_kind) - 1} more" if len(of_kind) > 1 else ""
                out.append(Finding(
                    source, line, where, f"pii_{kind}",
                    f"looks like {KINDS[kind]} ({mask(of_kind[0])}{more}); remove or mask "
                    "personal data and secrets before training, since models can repeat "
                    "them verbatim", WARNING))
    return out


def string_fields(value: object, path: str = ""):
    """Every string leaf of a row with its field path (``messages[2].content``)."""
    if not path and isinstance(value, dict) and all(type(v) is str for v in value.values()):
        yield from value.items()  # a flat row (CSV, TSV): the common case, made cheap
        return
    if isinstance(value, str):
        yield path or None, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_fields(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from string_fields(item, f"{path}[{i}]")
