"""Read rows out of data files, each with the line it starts on.

Supported: ``.jsonl`` (also ``.ndjson``), ``.json`` (an array of objects, a single object,
or JSONL content under a ``.json`` name), ``.csv`` and ``.tsv`` (a header row, then one
record per row; quoted fields may span lines) and ``.parquet``.

Bad content never raises: a row that cannot be parsed comes back as a ``Finding`` in
place of the row, so one pass reports every problem. Only a missing or unreadable file
raises ``DataError``. In a JSON document a row may span many lines: ``read_located`` hands
each such row a ``FieldLines`` that finds the line of a field inside it, so a finding can
point at the offending field rather than at the row's ``{``. This module knows nothing of the training formats (chat, alpaca,
...): it returns plain Python objects and leaves their meaning to ``formats``.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from tunelab.data.findings import Finding
from tunelab.errors import DataError

# json.decoder.scanstring is public in CPython (the C scanner); typeshed does not list it.
scanstring = json.decoder.scanstring  # type: ignore[attr-defined]

SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")

Record = tuple[int, "object | Finding"]
Located = tuple[int, "object | Finding", "FieldLines | None"]

# JSON's own whitespace; str.isspace() would also accept characters json rejects.
_JSON_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_RESAVE = "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > NEW`)"
# One step of a field path: ``.key`` is matched against the row's keys, ``[3]`` is an index.
_INDEX = re.compile(r"\[(\d+)\]")


class FieldLines:
    """The lines of the fields inside one row of a JSON document, found on demand.

    Only rows with a finding on a field are searched, so a clean file costs nothing more
    than one small object per row.
    """

    __slots__ = ("_line", "_start", "_text")

    def __init__(self, text: str, start: int, line: int) -> None:
        self._text = text
        self._start = start  # where the row's value begins in ``text``
        self._line = line  # the line of ``start``

    def line_of(self, field: str) -> int:
        """The line of a field given as a path like ``messages[1].role``.

        Args:
            field: keys joined by ``.``, list indexes in ``[]``, as findings name fields.

        Returns:
            The line of the deepest part of the path that the row holds: a key's own line,
            or the first line of a list element; the row's first line when the row holds
            none of it (a missing field).
        """
        text, pos, best, rest = self._text, self._start, self._start, field
        try:
            while rest:
                pos = _skip_ws(text, pos)
                if text.startswith("{", pos):
                    member = self._member(pos, rest)
                    if member is None:
                        break
                    best, pos, rest = member
                    rest = rest[1:] if rest.startswith(".") else rest
                elif text.startswith("[", pos) and (index := _INDEX.match(rest)):
                    element = self._element(pos, int(index.group(1)))
                    if element is None:
                        break
                    pos = best = element
                    rest = rest[index.end():]
                    rest = rest[1:] if rest.startswith(".") else rest
                else:
                    break
        except (ValueError, IndexError, RecursionError):
            pass  # the row parsed once, so this is not expected; the row's line will do
        return self._line + text.count("\n", self._start, best)

    def place(self, finding: Finding) -> Finding:
        """The finding moved to the line of its field, still counted for its row."""
        if finding.field is None:
            return finding
        line = self.line_of(finding.field)
        if line == finding.line:
            return finding
        return dataclasses.replace(finding, line=line, rows=finding.row_lines)

    def _member(self, pos: int, rest: str) -> tuple[int, int, str] | None:
        """In the object at ``pos``: the key that starts ``rest`` (the longest, and the last
        of duplicates, as ``json`` keeps it) as ``(key position, value position, rest)``."""
        text = self._text
        found = None
        pos = _skip_ws(text, pos + 1)
        while text.startswith('"', pos):
            key_at = pos
            key, pos = scanstring(text, pos + 1)
            pos = _skip_ws(text, pos) + 1  # past the ':'
            pos = _skip_ws(text, pos)
            if rest == key or rest.startswith((key + ".", key + "[")):
                if found is None or len(key) >= len(found[2]):
                    found = (key_at, pos, key)
            _, pos = _DECODER.raw_decode(text, pos)
            pos = _skip_ws(text, pos)
            if not text.startswith(",", pos):
                break
            pos = _skip_ws(text, pos + 1)
        if found is None:
            return None
        return found[0], found[1], rest[len(found[2]):]

    def _element(self, pos: int, index: int) -> int | None:
        """The position of element ``index`` of the list at ``pos`` (``None``: no such one)."""
        text = self._text
        pos = _skip_ws(text, pos + 1)
        if text.startswith("]", pos):
            return None
        for _ in range(index):
            _, pos = _DECODER.raw_decode(text, pos)
            pos = _skip_ws(text, pos)
            if not text.startswith(",", pos):
                return None
            pos = _skip_ws(text, pos + 1)
        return pos


def read_records(path: Path) -> Iterator[Record]:
    """Yield every row of a data file with its 1-based line, or a finding in its place.

    The same rows as ``read_located``, without the field lines.

    Args:
        path: a ``.jsonl``/``.ndjson``, ``.json``, ``.csv``, ``.tsv`` or ``.parquet`` file.

    Returns:
        An iterator of ``(line, row)`` where ``row`` is the parsed object (any JSON value;
        a ``dict`` for CSV, TSV and Parquet), or ``(line, Finding)`` for a row that cannot
        be parsed. ``line`` is the physical line where the row starts, or the Parquet row
        number; 0 stands for the file as a whole. A file with no rows yields one
        ``empty_file`` finding.

    Raises:
        DataError: the file is missing, is a directory, cannot be read, has a suffix that
            is not supported, or is Parquet while pyarrow is not installed.
    """
    for line, row, _ in read_located(path):
        yield line, row


def read_located(path: Path) -> Iterator[Located]:
    """Yield every row of a data file as ``read_records`` does, with its ``FieldLines``.

    Args:
        path: as for ``read_records``.

    Returns:
        An iterator of ``(line, row, field_lines)``: ``field_lines`` finds the line of a
        field inside a row of a JSON document (an array of rows or one object), and is
        ``None`` for every other row: a JSONL, CSV or TSV row starts on the line of its
        fields (a quoted CSV cell may span lines), and Parquet has no lines.

    Raises:
        DataError: as for ``read_records``.
    """
    path = Path(path)
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"{source}: the suffix {suffix or '(none)'!r} is not a data format tunelab reads",
            hint=f"rename the file to end in one of {', '.join(SUFFIXES)} to match its content",
        )
    rows: Iterator[Record | Located]
    if suffix == ".parquet":
        rows = _parquet_rows(path, source)
    else:
        data = _read_bytes(path)
        if suffix in (".jsonl", ".ndjson"):
            rows = _jsonl_rows(data, source)
        elif suffix == ".json":
            rows = _json_rows(data, source)
        else:
            rows = _delimited_rows(data, source, "\t" if suffix == ".tsv" else ",")
    count = 0
    for record in rows:
        count += 1
        # Only the rows of a JSON document come with field lines; the others are pairs.
        yield record if len(record) == 3 else (*record, None)
    if count == 0:
        yield 0, Finding(source, 0, None, "empty_file",
                         "the file holds no rows (it is empty, blank, a bare header or []); "
                         "add examples or point at the right file"), None


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, or a DataError that says why they cannot be had."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise _unreadable(path, e) from None


def _unreadable(path: Path, error: OSError) -> DataError:
    """The DataError for a file that cannot be opened, naming the reason and the fix."""
    if isinstance(error, FileNotFoundError):
        where = "" if Path(path).is_absolute() else f"; relative paths start from {Path.cwd()}"
        return DataError(f"{path}: no such file", hint=f"check the path{where}")
    if isinstance(error, IsADirectoryError):
        return DataError(f"{path}: is a directory, not a data file",
                         hint=f"pass a file ending in one of {', '.join(SUFFIXES)}")
    return DataError(f"{path}: cannot be read ({error.strerror or error})",
                     hint="check that the file exists and that you may read it")


def _strip_bom(data: bytes) -> bytes:
    return data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data


def _is_blank(raw: bytes) -> bool:
    """Whether a physical line holds only JSON whitespace (it is then skipped)."""
    return not raw.strip(b" \t\r")


def _utf8_finding(source: str, line: int, raw: bytes, error: UnicodeDecodeError,
                  tail: str = "") -> Finding:
    if line == 1 and raw.startswith(_UTF16_BOMS):
        what = "the file starts with a UTF-16 byte-order mark"
    else:
        what = (f"byte 0x{raw[error.start]:02x} at byte {error.start + 1} of the line is not "
                "valid UTF-8")
    return Finding(source, line, None, "invalid_utf8", f"{what}; {_RESAVE}{tail}")


def _jsonl_rows(data: bytes, source: str) -> Iterator[Record]:
    """One JSON value per physical line; blank lines are skipped, a bad line is a finding."""
    first = True
    for line, raw in enumerate(_strip_bom(data).split(b"\n"), start=1):
        if _is_blank(raw):
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield line, _utf8_finding(source, line, raw, e)
            first = False
            continue
        yield line, _parse_line(text, source, line, first)
        first = False


def _decode_problem(error: json.JSONDecodeError) -> str:
    """``json``'s message with the column; some of its messages already end in "at"."""
    at = "" if error.msg.endswith(" at") else " at"
    return f"{error.msg}{at} column {error.colno}"


def _parse_line(text: str, source: str, line: int, first: bool) -> object:
    """The JSON value on one line, or an ``invalid_json`` finding."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        problem = _decode_problem(e)
    except RecursionError:
        problem = "the value is nested too deeply to parse"
    except ValueError as e:  # e.g. an integer longer than Python's digit limit
        problem = str(e)
    if first and text.lstrip().startswith("["):
        fix = "this looks like a JSON array: rename the file to .json"
    else:
        fix = "each line must hold one complete JSON object"
    return Finding(source, line, None, "invalid_json", f"{problem}; {fix}")


def _decode_whole(data: bytes, source: str) -> tuple[str | None, list[Finding]]:
    """Decode a file that is parsed as one document; on bad UTF-8, one finding per bad line."""
    data = _strip_bom(data)
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    findings = []
    for line, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            findings.append(_utf8_finding(source, line, raw, e,
                                          "; the file was not parsed until this is fixed"))
    return None, findings


def _json_rows(data: bytes, source: str) -> Iterator[Record | Located]:
    """A ``.json`` file: JSONL content, an array of rows, or one value."""
    text, findings = _decode_whole(data, source)
    if text is None:
        for finding in findings:
            yield finding.line, finding
        return
    if _looks_like_jsonl(text):
        yield from _jsonl_rows(data, source)
    else:
        yield from _document_rows(text, source)


def _looks_like_jsonl(text: str) -> bool:
    """JSONL under a .json name: the first non-blank line is a whole value and more follow."""
    start = 0
    while True:  # find the first non-blank line without splitting a file that may be large
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        if text[start:end].strip(" \t\r"):
            break
        if end == len(text):
            return False
        start = end + 1
    if _skip_ws(text, end) == len(text):
        return False  # a single line: one document, whatever it holds
    try:
        json.loads(text[start:end])
    except (ValueError, RecursionError):
        return False
    return True


def _skip_ws(text: str, pos: int) -> int:
    """The first position at or after ``pos`` that is not JSON whitespace (may be the end)."""
    match = _JSON_WS.match(text, pos)
    assert match is not None  # the pattern accepts the empty string, so it always matches
    return match.end()


class _LineCounter:
    """1-based line of a position in a text, counted forward for positions that only grow."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._line = 1

    def at(self, pos: int) -> int:
        self._line += self._text.count("\n", self._pos, pos)
        self._pos = pos
        return self._line


def _document_rows(text: str, source: str) -> Iterator[Record | Located]:
    """A JSON document: each element of a top-level array, or the one value it holds."""
    pos = _skip_ws(text, 0)
    if pos == len(text):
        return
    lines = _LineCounter(text)
    if text[pos] == "[":
        pos = yield from _array_rows(text, pos, source, lines)
        if pos is None:
            return
    else:
        start, lines_from = lines.at(pos), pos
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield e.lineno, _json_finding(source, e.lineno, _decode_problem(e))
            return
        except (ValueError, RecursionError) as e:
            yield start, _json_finding(source, start, _describe(e))
            return
        yield start, value, FieldLines(text, lines_from, start)
    pos = _skip_ws(text, pos)
    if pos < len(text):
        line = lines.at(pos)
        yield line, _json_finding(source, line, "extra data after the end of the JSON value; "
                                  "remove it, or write one object per line in a .jsonl file")


def _array_rows(text: str, pos: int, source: str, lines: _LineCounter):
    """Yield the elements of the array that opens at ``pos``; return the position after it.

    Returns ``None`` when the array is malformed (the finding has been yielded, and rows
    after the fault cannot be located reliably, so reading stops there).
    """
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return pos + 1
    while True:
        start = pos
        try:
            value, pos = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as e:
            yield e.lineno, _json_finding(source, e.lineno, _decode_problem(e), stop=True)
            return None
        except (ValueError, RecursionError) as e:
            line = lines.at(start)
            yield line, _json_finding(source, line, _describe(e), stop=True)
            return None
        line = lines.at(start)
        yield line, value, FieldLines(text, start, line)
        end = pos
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == "]":
            return pos + 1
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            if pos < len(text) and text[pos] != "]":
                continue
            if pos == len(text):
                pos = end  # report the line of the last row, not a blank line after it
            problem = ("a comma before the closing ']'; remove it" if pos > end
                       else "the array is not closed; add ']' at the end")
        elif pos == len(text):
            pos = end
            problem = "the array is not closed; add ']' at the end"
        else:
            problem = (f"expected ',' or ']' after the row that starts at line "
                       f"{lines.at(start)}, found {text[pos]!r}")
        line = lines.at(pos)
        yield line, _json_finding(source, line, problem, stop=True)
        return None


def _describe(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "the value is nested too deeply to parse"
    return str(error)


def _json_finding(source: str, line: int, problem: str, stop: bool = False) -> Finding:
    tail = "; rows after this point were not read" if stop else ""
    return Finding(source, line, None, "invalid_json", f"{problem}{tail}")


def _delimited_rows(data: bytes, source: str, delimiter: str) -> Iterator[Record]:
    """CSV or TSV with a header row; each record becomes a dict of header -> cell text."""
    text, findings = _decode_whole(data, source)
    if text is None:
        for finding in findings:
            yield finding.line, finding
        return
    # The default limit (128 KiB per cell) rejects long documents; it is process-wide.
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    name = "TSV" if delimiter == "\t" else "CSV"
    header: list[str] | None = None
    end = 0  # last physical line consumed so far
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield reader.line_num, Finding(source, reader.line_num, None, f"invalid_{name.lower()}",
                                           f"{e}; rows after this point were not read")
            return
        start, end = end + 1, reader.line_num
        if not cells:
            continue
        if header is None:
            header = cells
            duplicates = sorted({c for c in cells if cells.count(c) > 1})
            if duplicates:
                yield start, Finding(source, start, None, "duplicate_column",
                                     f"the header names {', '.join(map(repr, duplicates))} more "
                                     "than once; rename the columns so each is unique")
                return
            continue
        if len(cells) != len(header):
            yield start, Finding(
                source, start, None, "wrong_field_count",
                f"the row has {len(cells)} fields but the header has {len(header)}; "
                f"quote cells that contain {delimiter!r}, quotes or line breaks")
            continue
        yield start, dict(zip(header, cells, strict=True))


def _parquet_rows(path: Path, source: str) -> Iterator[Record]:
    """Parquet rows as dicts; the line is the 1-based row number."""
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{source}: reading .parquet needs pyarrow, which is not installed",
                        hint="pip install pyarrow") from None
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise _unreadable(path, e) from None
    errors = (pyarrow.ArrowException, OSError, ValueError)
    row = 0
    try:
        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches():
                for record in batch.to_pylist():
                    row += 1
                    yield row, record
    except errors as e:
        where = row + 1 if row else 0
        yield where, Finding(source, where, None, "invalid_parquet",
                             f"the file is not readable Parquet ({e}); re-export it, e.g. "
                             "with pandas DataFrame.to_parquet")
