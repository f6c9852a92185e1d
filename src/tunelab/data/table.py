"""Any data file as a table of rows, and writing rows back atomically.

The data-gate operations (dedup, leakage, labels, clean, split, balance, augment) work on
any table: the rows of a file as ``read_records`` returns them, plus field names the
user gives. This module reads such a table (a file with an unreadable row is refused,
with every such row listed), turns chosen fields of a row into one text, and writes
rows in any format with ``tunelab.files``' atomic writes, so a crash never leaves a
half-written output; an input is never written at all. It knows
nothing of training formats, tokenizers or models.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tunelab.data.findings import Finding, capped_lines, type_name
from tunelab.data.readers import SUFFIXES, read_records
from tunelab.errors import DataError
from tunelab.files import write_atomic, write_text_atomic

# Columns the gate itself adds: ``augment`` tags the rows it makes with the method and
# the line of the row they came from. They are bookkeeping, never text to compare.
AUGMENTED = "augmented"
AUGMENTED_FROM = "augmented_from"
TAG_COLUMNS = (AUGMENTED, AUGMENTED_FROM)


@dataclass
class Table:
    """The rows of one data file.

    Args:
        source: the file path as the user gave it.
        rows: one dict per row, in file order.
        lines: the 1-based line (or Parquet row) each row starts on, as in findings.
        columns: every key of every row, in order of first appearance.
    """

    source: str
    rows: list[dict]
    lines: list[int]
    columns: list[str]

    def __len__(self) -> int:
        return len(self.rows)


def read_table(path: str | Path) -> Table:
    """Read every row of a data file as a dict.

    Args:
        path: a ``.jsonl``, ``.json``, ``.csv``, ``.tsv`` or ``.parquet`` file.

    Returns:
        The table, in file order.

    Raises:
        DataError: the file is missing or unreadable, holds no rows, or has rows that
            cannot be parsed or are not objects; every such row is listed.
    """
    source = str(path)
    rows: list[dict] = []
    lines: list[int] = []
    seen: dict[str, None] = {}
    problems: list[Finding] = []
    for line, row in read_records(Path(path)):
        if isinstance(row, Finding):
            problems.append(row)
        elif not isinstance(row, dict):
            problems.append(Finding(source, line, None, "row_not_object",
                                    f"the row is {type_name(row)}, not an object with fields"))
        else:
            rows.append(row)
            lines.append(line)
            seen.update(dict.fromkeys(row))
    if problems:
        raise DataError(f"{source}: {len(problems)} row(s) cannot be read; nothing was done",
                        findings=capped_lines(problems),
                        hint=f"fix them; `tunelab data check {source}` reports every problem")
    return Table(source, rows, lines, list(seen))


def require_columns(table: Table, names: Iterable[str], option: str) -> None:
    """Refuse column names the table does not have, suggesting the closest ones.

    Args:
        table: the table the names refer to.
        names: the names the user gave.
        option: the option they came from (``--stratify``), for the message.

    Raises:
        DataError: one finding per unknown name.
    """
    bad = []
    for name in names:
        if name not in table.columns:
            close = difflib.get_close_matches(name, table.columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            bad.append(f"{option} {name!r}: no such column{hint}")
    if bad:
        raise DataError(f"{table.source}: unknown column(s)", findings=bad,
                        hint=f"the columns are {', '.join(table.columns)}")


def text_columns(table: Table, fields: list[str] | None, exclude: Iterable[str] = ()) -> list[str]:
    """The columns whose text stands for a row when rows are compared.

    Args:
        table: the table.
        fields: columns the user chose; ``None`` or empty means every column except
            ``exclude`` and the gate's own tag columns.
        exclude: columns that are not text (the label, the group).

    Returns:
        Column names, in table order for the default.

    Raises:
        DataError: a chosen column does not exist, or no column is left.
    """
    if fields:
        require_columns(table, fields, "--field")
        return list(fields)
    skip = set(exclude) | set(TAG_COLUMNS)
    chosen = [c for c in table.columns if c not in skip]
    if not chosen:
        raise DataError(f"{table.source}: no column is left to compare rows by",
                        hint="name the text column(s) with --field")
    return chosen


def value_text(value: object) -> str:
    """The text of one cell: strings as they are, nested turns as their texts joined.

    Args:
        value: a cell (any JSON value, or a Parquet scalar).

    Returns:
        ``""`` for null; the string leaves of lists and objects joined with newlines
        (so a conversation's turns become its texts); anything else as ``str``.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(t for t in (value_text(v) for v in value.values()) if t)
    if isinstance(value, (list, tuple)):
        return "\n".join(t for t in (value_text(v) for v in value) if t)
    return label_text(value)


def row_text(row: dict, fields: list[str]) -> str:
    """The text of the chosen fields of a row, joined by newlines."""
    return "\n".join(value_text(row.get(f)) for f in fields)


def label_text(value: object) -> str:
    """A label as a string, so that JSON ``0``, CSV ``"0"`` and a YAML key ``0`` agree.

    Args:
        value: a label cell.

    Returns:
        ``""`` for null, ``true``/``false`` for booleans, integral floats without
        ``.0``, lists and objects as compact JSON, anything else as ``str``.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def refuse_overwrite_input(output: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output path that is one of the inputs: inputs are never written.

    Raises:
        DataError: ``output`` resolves to the same file as an input.
    """
    out = Path(output).resolve()
    for given in inputs:
        if Path(given).resolve() == out:
            raise DataError(f"{output}: the output is the input file, which is never changed",
                            hint="write to another path, e.g. add .clean before the suffix")


def check_suffix(path: str | Path) -> str:
    """The lower-case suffix of an output path, or a DataError naming the ones written."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: cannot write rows as {suffix or '(no suffix)'!r}",
                        hint=f"end the output path in one of {', '.join(SUFFIXES)}")
    return suffix


def write_rows(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Write rows in the format the path's suffix names, atomically.

    JSONL gets one object per line and JSON an indented array (UTF-8, non-ASCII kept);
    CSV and TSV get a header and ``\\n`` line ends, with lists and objects as JSON text
    and null as an empty cell; Parquet gets one column per key.

    Args:
        path: the output file; its folder is created if needed.
        rows: the rows, each a dict.
        columns: the column order for CSV and TSV; by default every key in order of
            first appearance.

    Raises:
        DataError: the suffix is not one tunelab writes, or the file cannot be written.
    """
    suffix = check_suffix(path)
    if suffix == ".parquet":
        _write_parquet(Path(path), rows)
        return
    if suffix in (".jsonl", ".ndjson"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif suffix == ".json":
        text = json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    else:
        text = _delimited(rows, columns, "\t" if suffix == ".tsv" else ",")
    write_text_atomic(path, text, error=DataError)


def _delimited(rows: list[dict], columns: list[str] | None, delimiter: str) -> str:
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict, bool)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _write_parquet(path: Path, rows: list[dict]) -> None:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: writing .parquet needs pyarrow, which is not installed",
                        hint="pip install pyarrow") from None
    table = pyarrow.Table.from_pylist(rows)
    write_atomic(path, lambda tmp: pq.write_table(table, str(tmp)), error=DataError)
