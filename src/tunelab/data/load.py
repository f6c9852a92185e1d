"""Load a data file, or a weighted mixture of files, into ``Example`` objects.

Every row is accounted for: it becomes an example or it has at least one finding, and
one error anywhere stops the load with a report of all of them (``DataError``), so a
run never trains on a silently shortened data set. ``check_file`` is the same pass
without raising, for ``tunelab data check``; ``holdout_split`` carves the seeded
validation rows out of the training rows when the config names no validation file. A
problem that every row shares (a column missing or misnamed, so no format fits or a
needed field is absent everywhere) is one finding for the file, not one per row; the
error lists at most ``SHOWN_PER_CODE`` findings of one code. No column is dropped
silently: the keys that the rows' format does not read are one ``unused_columns``
warning for the file (they stay in ``Example.meta``), naming the format that would read
them. This module knows nothing of tokenizers, templates or training; it only reads,
converts and reports.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, KeysView
from pathlib import Path
from typing import TypeVar

from tunelab.data.example import Example
from tunelab.data.findings import ERROR, WARNING, Finding, cap_per_code, capped_lines
from tunelab.data.formats import (
    FORMATS,
    detect_format,
    missing_everywhere,
    no_format_message,
    reads,
    to_example,
    unused_message,
)
from tunelab.data.pairs import not_pairs
from tunelab.data.readers import read_located
from tunelab.errors import DataError
from tunelab.tracking.reporter import SILENT, Reporter

# Codes that, found on every row for the same field, are one problem of the file: a column
# that is missing or misnamed. Other codes stay per row (their values differ per row).
_FILE_LEVEL = ("missing_field", "missing_messages", "unknown_format")
# Containers whose rows share one header: there a missing key is a missing column.
_TABLES = (".csv", ".tsv", ".parquet")

T = TypeVar("T")


def check_file(path: str | Path,
               format: str = "auto") -> tuple[list[Example], list[Finding]]:
    """Read and convert a whole file, returning every example and every finding.

    Args:
        path: a ``.jsonl``, ``.json``, ``.csv``, ``.tsv`` or ``.parquet`` file.
        format: one of ``FORMATS``, or ``"auto"``: the format of the first row whose keys
            fit one; a later row in another format is a ``mixed_formats`` error.

    Returns:
        ``(examples, findings)`` in file order. A row with an error-severity finding has
        no example; warnings come with their example. A finding on a field of a row of a
        JSON document is on the field's own line (``Finding.rows`` keeps the row's). A
        missing field or unknown format shared by every row of a file of two rows or more
        is one finding on line 0 whose ``rows`` are all of them, placed first. Keys of the
        loaded rows that their format does not read (``formats.reads``; null values
        aside) are one ``unused_columns`` warning on line 0, after those.

    Raises:
        DataError: ``format`` is not a known name, or the file is missing or unreadable
            (bad content is reported as findings, never raised).
    """
    if format != "auto" and format not in FORMATS:
        raise DataError(f"{path}: format {format!r} is not one of auto, {', '.join(FORMATS)}",
                        hint="pick one of them; 'auto' detects it from the first row")
    source = str(path)
    noun = _noun(path)
    examples: list[Example] = []
    findings: list[Finding] = []
    chosen = None if format == "auto" else format
    chosen_at = 0  # line of the row that fixed the format in auto mode
    objects: list[int] = []  # lines of the rows that are objects
    keys: dict[str, None] = {}  # every key of those rows, in order of first appearance
    sample: dict | None = None  # the first of them
    unused: dict[str, None] = {}  # keys that loaded rows hold and their format does not read
    unused_rows: list[int] = []  # the lines of the rows that hold one of them
    shape: KeysView[str] | None = None  # the keys of the last loaded row, and those it did not read
    unread: list[str] = []
    for line, row, field_lines in read_located(Path(path)):
        if isinstance(row, Finding):
            findings.append(row)
            continue
        if isinstance(row, dict):
            objects.append(line)
            keys.update(dict.fromkeys(row))
            if sample is None:
                sample = row
        fmt = chosen
        if format == "auto" and isinstance(row, dict):
            found = detect_format(row)
            if chosen is None and found is None:
                findings.append(Finding(source, line, None, "unknown_format",
                                        no_format_message(row, noun)))
                continue
            if chosen is None:
                chosen, chosen_at, fmt = found, line, found
            elif found is not None and found != chosen:
                findings.append(Finding(
                    source, line, None, "mixed_formats",
                    f"the row is {found} (keys {_keys(row)}) but the file is {chosen} from "
                    f"line {chosen_at}; convert the row to {chosen} or split the file by format"))
                continue
        example, row_findings = to_example(row, fmt or "chat", source, line)
        if field_lines is not None:
            row_findings = [field_lines.place(f) for f in row_findings]
        findings.extend(row_findings)
        if example is not None:
            examples.append(example)
        if example is not None and isinstance(row, dict):  # a rejected row is reported already
            if row.keys() != shape:  # rows mostly share their keys: work them out once
                shape = row.keys()
                unread = [key for key in row if key not in reads(fmt or "chat", row)]
            spare = [key for key in unread if row[key] is not None]  # null: Parquet pads absent keys
            for key in spare:
                unused.setdefault(key, None)
            if spare:
                unused_rows.append(line)
    findings = _once_for_the_file(findings, objects, list(keys), chosen, sample, source, noun)
    if unused:  # after the file-level errors, before the rows' findings
        at = next((i for i, f in enumerate(findings) if f.line != 0), len(findings))
        findings.insert(at, Finding(
            source, 0, None, "unused_columns",
            unused_message(chosen or "chat", unused, keys, noun, sample), WARNING,
            rows=tuple(unused_rows)))
    return examples, findings


def _noun(path: str | Path) -> str:
    """What a row's keys are called in messages: columns in tables, keys in JSON."""
    return "column" if Path(path).suffix.lower() in _TABLES else "key"


def _once_for_the_file(findings: list[Finding], objects: list[int], keys: list[str],
                       fmt: str | None, sample: dict | None, source: str,
                       noun: str) -> list[Finding]:
    """Replace a missing field or unknown format found on every row by one file-level finding.

    A 5,000-row table with a misnamed column otherwise reports the same thing 5,000
    times. One row is its own problem, so a file needs two rows or more.
    """
    if len(objects) < 2:
        return findings
    groups: dict[tuple[str, str | None], list[Finding]] = {}
    for f in findings:
        top_level = f.field is None or f.field.isidentifier()  # not messages[0].role
        if f.code in _FILE_LEVEL and f.is_error and top_level:
            groups.setdefault((f.code, f.field), []).append(f)
    everywhere = set(objects)
    once = []
    collapsed: set[int] = set()
    for (code, field), group in groups.items():
        rows = tuple(line for f in group for line in f.row_lines)
        if len(rows) != len(everywhere) or set(rows) != everywhere:
            continue
        if code == "unknown_format":
            message = no_format_message(keys, noun, len(rows))
        else:
            message = missing_everywhere(fmt or "chat", field or "", keys, len(rows), noun,
                                         sample)
        once.append(Finding(source, 0, field, code, message, ERROR, rows=rows))
        collapsed.update(id(f) for f in group)
    if not once:
        return findings
    return once + [f for f in findings if id(f) not in collapsed]


def load_examples(path: str | Path, format: str = "auto",
                  reporter: Reporter = SILENT) -> list[Example]:
    """Load every row of a file as an ``Example``, or fail with a report of every problem.

    Args:
        path: a ``.jsonl``, ``.json``, ``.csv``, ``.tsv`` or ``.parquet`` file.
        format: one of ``FORMATS``, or ``"auto"`` to detect it from the first row.
        reporter: told each warning (at most ``SHOWN_PER_CODE`` of a code, then a count).

    Returns:
        One example per row, in file order. Warnings go to ``reporter``, not raised.

    Raises:
        DataError: the file is missing or unreadable, ``format`` is unknown, or any row has
            an error; ``findings`` then lists every error as ``file:line field: [code] ...``.
    """
    examples, findings = check_file(path, format)
    errors = [f for f in findings if f.is_error]
    if errors:
        lines = len({line for f in errors for line in f.row_lines or (f.line,)})
        raise DataError(
            f"{path}: {len(errors):,} error(s) on {lines:,} line(s); nothing was loaded",
            findings=capped_lines(errors),
            hint=f"fix the rows above, or run `tunelab data check {path}` for a full report")
    _report_warnings(path, [f for f in findings if not f.is_error], reporter)
    return examples


def require_pairs(examples: list[Example], what: str) -> None:
    """Refuse examples that are not preference pairs, naming their files and lines.

    Args:
        examples: loaded examples.
        what: who needs pairs, for the message (``"train.method dpo"``).

    Raises:
        DataError: an example has no rejected answer (its file is in another format).
    """
    missing = not_pairs(examples)
    if not missing:
        return
    shown = 5  # lines named per file; the count says how many more
    lines = [f"{source}: {len(at):,} row(s) are not pairs (no rejected answer), at line(s) "
             f"{', '.join(map(str, at[:shown]))}{' ...' if len(at) > shown else ''}"
             for source, at in missing.items()]
    raise DataError(
        f"{what} trains on preference pairs, and {len(missing)} file(s) hold other rows",
        findings=lines,
        hint="give rows with a prompt, a chosen and a rejected answer (HH-RLHF chosen/rejected "
             "transcripts, TRL prompt/chosen/rejected, OpenAI input/preferred_output/"
             "non_preferred_output, LLaMA-Factory conversations/chosen/rejected)")


def load_pairs(path: str | Path, format: str = "auto",
               reporter: Reporter = SILENT) -> list[Example]:
    """Load a file of preference pairs (``Example.rejected`` set on each), or fail.

    Raises:
        DataError: as ``load_examples``, or the rows are not pairs.
    """
    examples = load_examples(path, format, reporter)
    require_pairs(examples, f"{path}: reading preference pairs")
    return examples


def load_mixture(sources: list[tuple[str | Path, str, float]], seed: int,
                 reporter: Reporter = SILENT,
                 read: Callable[[str | Path, str], list[Example]] | None = None) -> list[Example]:
    """Load several files and repeat or subsample each by its weight.

    A weight of 1.0 keeps every row once, 2.0 twice, 0.5 a seeded random half (rounded
    half up) and 2.5 every row twice plus a seeded random half. Subsampled rows keep
    their file order. The result is the sources concatenated in order: shuffling is the
    trainer's job. Repeated rows are the same ``Example`` objects: do not mutate them.

    Args:
        sources: ``(path, format, weight)`` per file; ``format`` as in ``load_examples``.
        seed: the same seed gives the same rows.
        reporter: told each file's warnings, and of a weight that keeps no row.
        read: ``(path, format) -> examples`` instead of ``load_examples`` (a run with a
            task renders its tables through ``tunelab.data.task``).

    Returns:
        The examples of every source.

    Raises:
        DataError: there are no sources, a weight is not a positive finite number, or a
            file cannot be loaded; every source is checked and all problems are reported.
    """
    if not sources:
        raise DataError("the data mixture has no sources",
                        hint="list at least one (path, format, weight)")
    report: list[str] = []
    loaded: list[list[Example]] = []
    for path, fmt, weight in sources:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight <= 0:
            report.append(f"{path}: weight {weight!r} must be a positive number (1.0 = every "
                          "row once, 2.0 = twice, 0.5 = a random half); remove the source "
                          "rather than giving it weight 0")
            continue
        try:
            loaded.append(read(path, fmt) if read is not None else load_examples(path, fmt, reporter))
        except DataError as e:
            report.extend(e.findings or [f"{e.message} ({e.hint})" if e.hint else e.message])
    if report:
        raise DataError(f"the data mixture of {len(sources)} source(s) cannot be loaded",
                        findings=report,
                        hint="fix the sources above; `tunelab data check FILE` reports one file")
    mixed: list[Example] = []
    for index, ((path, _, weight), examples) in enumerate(zip(sources, loaded, strict=True)):
        rng = random.Random(f"tunelab.mixture:{seed}:{index}")
        mixed.extend(_weighted(examples, weight, rng))
        if len(examples) and weight < 1 and not math.floor((weight % 1) * len(examples) + 0.5):
            reporter.warning(f"{path}: weight {weight} of {len(examples)} rows rounds to no "
                             "rows at all")
    return mixed


def _weighted(examples: list[Example], weight: float, rng: random.Random) -> list[Example]:
    """Every row ``int(weight)`` times, then a random share of ``weight % 1`` in file order."""
    whole = int(weight)
    share = math.floor((weight - whole) * len(examples) + 0.5)
    picked = sorted(rng.sample(range(len(examples)), share))
    return examples * whole + [examples[i] for i in picked]


def _keys(row: dict) -> str:
    return ", ".join(map(repr, row)) or "none"


def _report_warnings(path: str | Path, warnings: list[Finding], reporter: Reporter) -> None:
    shown, hidden = cap_per_code(warnings)
    for finding in shown:
        # Columns kept as metadata are a note on correct data, not a problem with it; a
        # column another format would read ("... would use 'label'") stays a warning.
        note = finding.code == "unused_columns" and " would use " not in finding.message
        (reporter.info if note else reporter.warning)(str(finding))
    for (_, code), n in hidden.items():
        reporter.warning(f"{path}: {n} more [{code}] warning(s)")
    if hidden:
        reporter.warning(f"{path}: run `tunelab data check {path}` to see every warning")


def holdout_split(rows: list[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Seeded split: (rows kept for training, rows held out); at least one row each side.

    Returns the rows unsplit when ``fraction`` is 0 or there are fewer than 2 rows.
    """
    if fraction <= 0 or len(rows) < 2:
        return list(rows), []
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_val = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
    held = set(idx[:n_val])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
