"""Clean a table: normalize text, fill or drop missing values, redact, drop empty and duplicate rows.

Every change is written to a change log, one line per change (row, action, field,
reason), so nothing is dropped or altered silently; the input file is never written
and the output appears whole or not at all (``tunelab.data.table.write_rows``).

Text is cleaned in every string of a row, nested turns included: Unicode NFC; control
characters removed (tab and line breaks are kept); line breaks made ``\\n``; inside a
line, runs of spaces, tabs and other Unicode spaces made one space (leading
indentation is kept, so code survives); trailing spaces cut; three or more line breaks
made two; the ends stripped. This module knows nothing of models or training formats.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.data.table import (
    check_suffix,
    read_table,
    refuse_overwrite_input,
    require_columns,
    row_text,
    text_columns,
    write_rows,
)
from tunelab.errors import DataError
from tunelab.files import write_text_atomic
from tunelab.gate import pii
from tunelab.gate.dedup import find_exact_duplicates, find_near_duplicates

# pii kinds -> the placeholder that replaces a match
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]",
                "ip_address": "[IP]", "api_key": "[API_KEY]"}
LOG_COLUMNS = ("row", "action", "field", "reason")

_KEEP = {"\t", "\n", "\r"}
_INVISIBLE = {"\u200b", "\ufeff"}  # zero-width space and a stray byte-order mark
_LINE_BREAK = re.compile(r"\r\n?")
_INNER_SPACE = re.compile(r"(?<=\S)[^\S\n]+(?=\S)")
_TRAILING = re.compile(r"[^\S\n]+(?=\n|$)")
_MANY_BREAKS = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class Change:
    """One change made to one row.

    Args:
        row: the row's line in the input file (as in findings).
        action: ``normalize``, ``redact``, ``fill`` or ``drop``.
        field: the field changed (``messages[1].content``), or ``""`` for a whole row.
        reason: what was done and why.
    """

    row: int
    action: str
    field: str
    reason: str


@dataclass
class CleanOptions:
    """What ``clean_rows`` does beyond normalizing text.

    Args:
        missing: per column (or ``*`` for every column), ``drop`` the row or
            ``fill:VALUE`` when the value is absent, null or empty after cleaning.
        redact: the pii kinds to replace with placeholders (``PLACEHOLDERS``); empty
            redacts nothing.
        dedup_fields: the columns that make two rows duplicates; ``None``: all of them.
        near_threshold: also drop near duplicates at this 5-gram Jaccard; ``None``:
            exact duplicates only.
    """

    missing: dict[str, str] = field(default_factory=dict)
    redact: tuple[str, ...] = ()
    dedup_fields: list[str] | None = None
    near_threshold: float | None = None


def clean_text(text: str) -> tuple[str, list[str]]:
    """Normalize one string.

    Args:
        text: any string.

    Returns:
        ``(cleaned, what)``: ``what`` names each kind of change made, e.g.
        ``["unicode NFC", "2 control characters removed", "whitespace"]``; empty when
        the text was already clean.
    """
    what = []
    out = unicodedata.normalize("NFC", text)
    if out != text:
        what.append("unicode NFC")
    removed = sum(1 for ch in out if _is_control(ch))
    if removed:
        out = "".join(ch for ch in out if not _is_control(ch))
        what.append(f"{removed} control character{'s' if removed > 1 else ''} removed")
    spaced = _LINE_BREAK.sub("\n", out)
    if not spaced.isascii():  # no-break and other Unicode spaces become plain spaces
        spaced = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in spaced)
    spaced = _INNER_SPACE.sub(" ", spaced)
    spaced = _TRAILING.sub("", spaced)
    spaced = _MANY_BREAKS.sub("\n\n", spaced).strip()
    if spaced != out:
        what.append("whitespace")
    return spaced, what


def _is_control(ch: str) -> bool:
    return (ch not in _KEEP and unicodedata.category(ch) == "Cc") or ch in _INVISIBLE


def parse_missing(specs: list[str]) -> dict[str, str]:
    """Parse ``FIELD=drop`` and ``FIELD=fill:VALUE`` rules (``*`` for every column).

    Raises:
        DataError: a rule has another shape; every bad rule is listed.
    """
    rules, bad = {}, []
    for spec in specs:
        name, sep, action = spec.partition("=")
        if not sep or not name or not (action == "drop" or action.startswith("fill:")):
            bad.append(f"--missing {spec!r}: write FIELD=drop or FIELD=fill:VALUE "
                       "(FIELD may be * for every column)")
        else:
            rules[name] = action
    if bad:
        raise DataError("invalid missing-value rule(s)", findings=bad)
    return rules


def parse_redact(kinds: str | None) -> tuple[str, ...]:
    """``EMAIL,PHONE`` (placeholder names, any case) or ``all`` as pii kinds.

    Raises:
        DataError: a name is not one of the placeholders.
    """
    if not kinds:
        return ()
    by_name = {p.strip("[]").lower(): k for k, p in PLACEHOLDERS.items()}
    names = [n.strip().lower() for n in kinds.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(PLACEHOLDERS)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DataError(f"--redact: unknown kind(s) {', '.join(unknown)}",
                        hint=f"use all, or some of {', '.join(n.upper() for n in by_name)}")
    return tuple(by_name[n] for n in names)


def redact_text(text: str, kinds: tuple[str, ...],
                find: Callable[[str], list] = pii.find_pii) -> tuple[str, Counter]:
    """Replace the personal data of the given kinds with typed placeholders.

    Args:
        text: the text.
        kinds: pii kinds (keys of ``PLACEHOLDERS``).
        find: the detector; returns matches with ``kind``, ``start`` and ``text``.

    Returns:
        ``(redacted, counts per placeholder)``; overlapping matches keep the first.
    """
    matches = sorted((m for m in find(text) if m.kind in kinds),
                     key=lambda m: (m.start, -len(m.text)))
    parts, counts, pos = [], Counter[str](), 0
    for m in matches:
        if m.start < pos:
            continue
        parts.append(text[pos:m.start])
        parts.append(PLACEHOLDERS[m.kind])
        counts[PLACEHOLDERS[m.kind]] += 1
        pos = m.start + len(m.text)
    parts.append(text[pos:])
    return "".join(parts), counts


def clean_rows(rows: list[dict], lines: list[int], options: CleanOptions,
               columns: list[str] | None = None,
               find: Callable[[str], list] = pii.find_pii) -> tuple[list[int], list[dict],
                                                                    list[Change]]:
    """Clean rows and decide which to keep.

    Args:
        rows: the rows (not modified).
        lines: each row's line in the input, for the change log.
        options: what to do beyond normalizing text.
        columns: the table's columns (for ``*`` rules); by default the keys seen.
        find: the pii detector used when ``options.redact`` is set.

    Returns:
        ``(kept, cleaned, changes)``: indices of the rows kept, their cleaned rows, and
        every change in row order.
    """
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    rules = _expand(options.missing, columns)
    changes: list[Change] = []
    kept: list[int] = []
    cleaned: list[dict] = []
    for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
        new = {k: _clean_value(v, k, line, options.redact, find, changes) for k, v in row.items()}
        reason = ("", "empty row: no field has a value") if all(
            _missing(v) for v in new.values()) else _apply_missing(new, rules, line, changes)
        if reason is not None:
            changes.append(Change(line, "drop", *reason))
            continue
        kept.append(i)
        cleaned.append(new)
    keep = _drop_duplicates(kept, cleaned, lines, options, columns, changes)
    changes.sort(key=lambda c: c.row)  # stable: a row's changes stay in the order made
    return [kept[k] for k in keep], [cleaned[k] for k in keep], changes


def _expand(missing: dict[str, str], columns: list[str]) -> dict[str, str]:
    rules = {c: missing["*"] for c in columns} if "*" in missing else {}
    rules.update({k: v for k, v in missing.items() if k != "*"})
    return rules


def _clean_value(value, path: str, line: int, redact: tuple[str, ...], find,
                 changes: list[Change]):
    if isinstance(value, str):
        text, what = clean_text(value)
        if what:
            changes.append(Change(line, "normalize", path, "; ".join(what)))
        if redact:
            text, counts = redact_text(text, redact, find)
            if counts:
                changes.append(Change(line, "redact", path,
                                      ", ".join(f"{n} {k}" for k, n in counts.items())))
        return text
    if isinstance(value, list):
        return [_clean_value(v, f"{path}[{k}]", line, redact, find, changes)
                for k, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _clean_value(v, f"{path}.{k}", line, redact, find, changes)
                for k, v in value.items()}
    return value


def _missing(value) -> bool:
    if value is None or value == "":
        return True
    if isinstance(value, (list, dict)):
        inner = value.values() if isinstance(value, dict) else value
        return all(_missing(v) for v in inner)
    return False


def _apply_missing(row: dict, rules: dict[str, str], line: int,
                   changes: list[Change]) -> tuple[str, str] | None:
    for name, action in rules.items():  # drops first: a dropped row is not filled
        if action == "drop" and _missing(row.get(name)):
            return name, "missing value"
    for name, action in rules.items():
        if action == "drop" or not _missing(row.get(name)):
            continue
        value = action[len("fill:"):]
        row[name] = value
        changes.append(Change(line, "fill", name, f"missing value filled with {value!r}"))
    return None


def _drop_duplicates(kept: list[int], cleaned: list[dict], lines: list[int],
                     options: CleanOptions, columns: list[str],
                     changes: list[Change]) -> list[int]:
    fields = options.dedup_fields or columns
    texts = [row_text(r, fields) for r in cleaned]
    drop: dict[int, str] = {}
    for cluster in find_exact_duplicates(texts):
        for k in cluster[1:]:
            drop[k] = f"duplicate of row {lines[kept[cluster[0]]]} (exact)"
    if options.near_threshold is not None:
        for cluster in find_near_duplicates(texts, options.near_threshold):
            first = next((k for k in cluster if k not in drop), cluster[0])
            for k in cluster:
                if k != first and k not in drop:
                    drop[k] = (f"near duplicate of row {lines[kept[first]]} (5-gram "
                               f"similarity >= {options.near_threshold} in a cluster of "
                               f"{len(cluster)})")
    for k, reason in drop.items():
        changes.append(Change(lines[kept[k]], "drop", "", reason))
    return [k for k in range(len(cleaned)) if k not in drop]


def change_log(changes: list[Change]) -> str:
    """The change log as CSV text: a header ``row,action,field,reason``, ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for c in changes:
        writer.writerow([c.row, c.action, c.field, c.reason])
    return buffer.getvalue()


def default_log_path(output: str | Path) -> Path:
    """``out.jsonl`` -> ``out.changes.csv``, beside the output."""
    out = Path(output)
    return out.with_name(out.stem + ".changes.csv")


def clean_file(input: str | Path, output: str | Path, options: CleanOptions | None = None,
               log: str | Path | None = None) -> dict:
    """Clean a data file into a new file and write its change log.

    Args:
        input: the data file; never written.
        output: the cleaned file; its suffix picks the format (it may differ from the
            input's).
        options: see ``CleanOptions``; the default only normalizes and drops empty
            rows and exact duplicates.
        log: the change log path; default ``default_log_path(output)``.

    Returns:
        A summary: ``input``, ``output``, ``log``, ``rows_in``, ``rows_out`` and
        ``actions`` (changes counted per action).

    Raises:
        DataError: the input cannot be read, a column named in the options does not
            exist, or an output path is the input or cannot be written.
    """
    options = options or CleanOptions()
    log = Path(log) if log else default_log_path(output)
    refuse_overwrite_input(output, [input])
    refuse_overwrite_input(log, [input, output])
    check_suffix(output)
    table = read_table(input)
    require_columns(table, [k for k in options.missing if k != "*"], "--missing")
    if options.dedup_fields:
        text_columns(table, options.dedup_fields)
    _, cleaned, changes = clean_rows(table.rows, table.lines, options, table.columns)
    columns = list(dict.fromkeys([*table.columns, *(k for r in cleaned for k in r)]))
    write_rows(output, cleaned, columns)
    write_text_atomic(log, change_log(changes), error=DataError)
    return {"input": str(input), "output": str(output), "log": str(log),
            "rows_in": len(table), "rows_out": len(cleaned),
            "actions": dict(Counter(c.action for c in changes))}
