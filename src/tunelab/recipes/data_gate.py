"""The `tunelab data check` and `tunelab data profile` recipes: files in, findings and a report out.

The gate (``tunelab.gate``) checks and profiles with whatever tokenizer it is handed; this recipe is
where the tokenizer comes from: the model named with ``--model`` (a store name, a local
folder, or a hub id already cached), or the default model of the config schema when it
is in the store. Without any, lengths are left out and the result says so. This module
prints nothing and sets no exit codes: ``tunelab.cli.data_check`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.schema import DEFAULT_MODEL
from tunelab.errors import ModelNotFoundError
from tunelab.gate.check import DEFAULT_MAX_LENGTH, CheckResult, check_data
from tunelab.gate.dedup import DEFAULT_THRESHOLD
from tunelab.gate.report import write_report
from tunelab.models.loading import load_tokenizer
from tunelab.models.resolve import resolve_model
from tunelab.tracking.reporter import Recorder

NO_MODEL = "none"  # `--model none`: do not measure token lengths


@dataclass
class GateRun:
    """What a check or profile run produced.

    Args:
        results: one check result per file, in the order given.
        model: the model whose tokenizer measured token lengths, or ``None``.
        report: the HTML report's ``index.html``, when one was written.
        notes: things the user should know that are not findings (a skipped model).
    """

    results: list[CheckResult]
    model: str | None
    report: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no file has an error."""
        return all(r.ok for r in self.results)

    def as_dict(self) -> dict:
        """The machine-readable report of every file."""
        return {"ok": self.ok, "model": self.model,
                "report": None if self.report is None else str(self.report),
                "notes": self.notes, "files": [r.as_dict() for r in self.results]}


def gate_tokenizer(model: str | None) -> tuple[Any, str | None, list[str]]:
    """The tokenizer that measures token lengths.

    Args:
        model: a model reference; ``None`` for the default model (skipped with a note
            when it is not in the store); ``"none"`` to measure nothing.

    Returns:
        ``(tokenizer or None, the model's name or None, notes)``.

    Raises:
        ModelNotFoundError: a model was named and cannot be found.
        ModelError: its tokenizer cannot be loaded.
    """
    if model is not None and model.lower() == NO_MODEL:
        return None, None, ["token lengths were not measured (--model none)"]
    name = model or DEFAULT_MODEL
    store_notes = Recorder()  # e.g. a store entry skipped for an unreadable manifest
    try:
        path = resolve_model(name, reporter=store_notes)
    except ModelNotFoundError as e:
        if model is not None:
            raise
        return None, None, [*store_notes.lines,
                            f"token lengths were not measured: the default model {name!r} is "
                            f"not in the store ({e.hint or 'pull it first'}); or pass --model"]
    return load_tokenizer(path), name, store_notes.lines


def run_check(paths: Sequence[str | Path], model: str | None = None, format: str = "auto",
              template: str | None = None, max_length: int = DEFAULT_MAX_LENGTH,
              near_duplicates: bool = True, threshold: float = DEFAULT_THRESHOLD,
              report_dir: str | Path | None = None) -> GateRun:
    """Check every file; optionally write the HTML report of all of them.

    Args:
        paths: data files.
        model: as for ``gate_tokenizer``.
        format: one of ``FORMATS`` or ``"auto"`` (detected per file).
        template: a chat template to use instead of the tokenizer's.
        max_length: tokens beyond which a row is reported as too long.
        near_duplicates: also look for near duplicates.
        threshold: the similarity at which rows are near duplicates.
        report_dir: where to write the report; ``None`` for none.

    Returns:
        The results, the model used and the report path.

    Raises:
        DataError: a file is missing or unreadable, or an argument is invalid.
        ModelError: the named model or its tokenizer cannot be loaded.
    """
    tokenizer, name, notes = gate_tokenizer(model)
    results = [check_data(p, format, tokenizer, template, max_length, near_duplicates, threshold)
               for p in paths]
    run = GateRun(results, name, notes=notes)
    if report_dir is not None:
        run.report = write_report(report_dir, results, name)
    return run


def run_profile(paths: Sequence[str | Path], out_dir: str | Path, model: str | None = None,
                format: str = "auto", template: str | None = None,
                max_length: int = DEFAULT_MAX_LENGTH) -> GateRun:
    """Profile every file into one HTML report (the check without near duplicates).

    Args:
        paths: data files.
        out_dir: the report folder.
        model: as for ``gate_tokenizer``.
        format: one of ``FORMATS`` or ``"auto"``.
        template: a chat template to use instead of the tokenizer's.
        max_length: the length limit drawn on the token-length plots.

    Returns:
        The results and the report path.

    Raises:
        DataError: a file is missing or unreadable, or the folder cannot be written.
        ModelError: the named model or its tokenizer cannot be loaded.
    """
    return run_check(paths, model, format, template, max_length, near_duplicates=False,
                     report_dir=out_dir)
