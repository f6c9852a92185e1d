"""Findings: one problem in one row of a data file, with where it is and how to fix it.

Readers, formats and validators return findings instead of raising, so that a whole
file is checked in one pass and every problem is reported at once. ``load`` turns the
error-severity findings into a ``DataError``. This module knows nothing of file formats.

Codes are stable snake_case strings that tests and users may match on, e.g.
``invalid_json``, ``invalid_utf8``, ``empty_file``, ``row_not_object``,
``missing_messages``, ``messages_not_list``, ``missing_role``, ``missing_content``,
``unknown_role``, ``empty_content``, ``no_assistant``, ``bad_weight``, ``unknown_key``,
``mixed_formats``, ``missing_field``, ``unknown_format``, ``not_string``.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"

# Longest repr of an offending value shown in a message; rows can hold whole documents.
_MAX_SHOWN = 60


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
    """

    source: str
    line: int
    field: str | None
    code: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.source}:{self.line} {self.field or '-'}: [{self.code}] {self.message}"

    @property
    def is_error(self) -> bool:
        """Whether this finding stops the file from loading."""
        return self.severity == ERROR


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
