"""Findings: one problem in one row of a data file, with where it is and how to fix it.

Readers, formats and validators return findings instead of raising, so that a whole
file is checked in one pass and every problem is reported at once. ``load`` turns the
error-severity findings into a ``DataError``. ``cap_per_code`` is the one rule for how
many findings of a kind are shown (by ``load`` in that error and by ``tunelab data check``),
so one systematic problem cannot bury the others. This module knows nothing of file
formats.

Codes are stable snake_case strings that tests and users may match on, e.g.
``invalid_json``, ``invalid_utf8``, ``empty_file``, ``row_not_object``,
``missing_messages``, ``messages_not_list``, ``missing_role``, ``missing_content``,
``unknown_role``, ``empty_content``, ``no_assistant``, ``bad_weight``, ``unknown_key``,
``mixed_formats``, ``missing_field``, ``unknown_format``, ``not_string``,
``unused_columns`` (a warning on line 0: keys the format does not read, once per file).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"

# Longest repr of an offending value shown in a message; rows can hold whole documents.
_MAX_SHOWN = 60
# Findings of one code shown before "... and N more": enough to see the pattern (and the
# lines to start fixing), few enough that the other codes stay in view.
SHOWN_PER_CODE = 20


@dataclass(frozen=True)
class Finding:
    """One problem found in a data file.

    Args:
        source: the file path as the user gave it.
        line: 1-based line (or Parquet row) of the problem; 0 means the file as a whole.
        field: the path of the offending field inside the row (``messages[2].role``), or
            ``None`` when the whole row is concerned.
        code: a stable snake_case identifier of the kind of problem.
        message: what is wrong, with the offending value, and what to do about it.
        severity: ``"error"`` (the file cannot be loaded) or ``"warning"`` (probably a
            mistake, but loadable).
        rows: the first lines of the rows the finding concerns, when they differ from
            ``(line,)``: the row's own line for a finding placed on the line of a field
            inside it (JSON documents), every row for one problem that all rows share,
            reported once for the file (line 0). Empty: the row at ``line``, if any.
    """

    source: str
    line: int
    field: str | None
    code: str
    message: str
    severity: str = ERROR
    rows: tuple[int, ...] = dataclasses.field(default=(), repr=False)  # `field` is a column here

    def __str__(self) -> str:
        return f"{self.source}:{self.line} {self.field or '-'}: [{self.code}] {self.message}"

    @property
    def is_error(self) -> bool:
        """Whether this finding stops the file from loading."""
        return self.severity == ERROR

    @property
    def row_lines(self) -> tuple[int, ...]:
        """The first lines of the rows this finding concerns (none for a file-level one)."""
        if self.rows:
            return self.rows
        return (self.line,) if self.line > 0 else ()


def cap_per_code(findings: list[Finding], limit: int = SHOWN_PER_CODE,
                 ) -> tuple[list[Finding], dict[tuple[str, str], int]]:
    """The first ``limit`` findings of each code and severity, and how many were left out.

    Args:
        findings: in the order they are to be shown.
        limit: findings shown per ``(severity, code)``.

    Returns:
        ``(shown, hidden)``: the findings kept, in their order, and the number left out per
        ``(severity, code)``, in the order the codes first appear.
    """
    seen: Counter = Counter()
    shown: list[Finding] = []
    hidden: dict[tuple[str, str], int] = {}
    for f in findings:
        key = (f.severity, f.code)
        seen[key] += 1
        if seen[key] <= limit:
            shown.append(f)
        else:
            hidden[key] = hidden.get(key, 0) + 1
    return shown, hidden


def capped_lines(findings: list[Finding], limit: int = SHOWN_PER_CODE) -> list[str]:
    """Findings as text lines, at most ``limit`` per code, then ``... and N more [code]``.

    Args:
        findings: in the order they are to be shown.
        limit: findings shown per code and severity.

    Returns:
        One line per finding shown, then one per code with findings left out.
    """
    shown, hidden = cap_per_code(findings, limit)
    return [str(f) for f in shown] + [f"... and {n:,} more [{code}] {severity}(s)"
                                      for (severity, code), n in hidden.items()]


def show_value(value: object) -> str:
    """Render an offending value for a message, shortened when long.

    Args:
        value: any value read from a data file.

    Returns:
        ``repr(value)``, cut to about 60 characters with ``...`` when longer.
    """
    text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return text


def type_name(value: object) -> str:
    """The JSON name of a value's type, for messages like ``expected a string, got a list``.

    Args:
        value: any value read from a data file.

    Returns:
        ``null``, ``a boolean``, ``a number``, ``a string``, ``a list``, ``an object``, or
        the Python type name for anything else (Parquet can hold dates and bytes).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
