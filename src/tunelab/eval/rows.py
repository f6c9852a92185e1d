"""The rows an evaluation asks about: a prompt, a reference, and every field for slicing.

Two ways in:

* ``--text-field F``: any table tunelab reads (JSONL, JSON, CSV/TSV, Parquet); the
  column ``F`` is the user turn and ``--label-field`` the reference. Every column stays
  in ``meta`` (slices, group fairness).
* otherwise: any training format (chat, Alpaca, classification tables, ...) through
  ``load_examples``; the final assistant turn is the reference unless ``meta`` holds
  the label field, and the prompt is everything before it.

This module knows nothing of models: it reads files and builds chats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tunelab.data.example import Example, Message
from tunelab.data.load import load_examples
from tunelab.data.table import label_text, read_table, require_columns
from tunelab.errors import DataError
from tunelab.tracking.reporter import SILENT, Reporter


@dataclass
class EvalRow:
    """One row to evaluate.

    Args:
        id: ``meta["id"]`` when the file has one, else ``file:line``.
        prompt: the chat to answer (no final assistant turn).
        reference: the true label, number or answer; None where the file has none.
        meta: every field of the source row (strings, numbers), for slices and groups.
        example: the source example (perplexity scores its answer tokens); None for
            table rows.
    """

    id: str
    prompt: list[Message]
    reference: str | None
    meta: dict = field(default_factory=dict)
    example: Example | None = None

    @property
    def user_text(self) -> str:
        """The text of the last user turn (what counterfactual probes rewrite)."""
        return next((m.content for m in reversed(self.prompt) if m.role == "user"), "")

    def with_user_text(self, text: str) -> EvalRow:
        """A copy whose last user turn says ``text`` instead."""
        msgs = list(self.prompt)
        for i in range(len(msgs) - 1, -1, -1):
            if msgs[i].role == "user":
                msgs[i] = Message("user", text, msgs[i].weight)
                break
        return replace(self, prompt=msgs)


def load_rows(path: str | Path, text_field: str | None = None, label_field: str = "label",
              limit: int | None = None, reporter: Reporter = SILENT) -> list[EvalRow]:
    """Read the rows of a data file for evaluation.

    Args:
        path: the data file.
        text_field: a column holding the prompt text; None reads the file as training
            examples (chats, Alpaca, classification tables, plain text).
        label_field: the column (or meta key) holding the reference.
        limit: keep the first ``limit`` rows (file order), None keeps all.

    Returns:
        The rows, in file order.

    Raises:
        DataError: the file is unreadable, or a named column does not exist.
    """
    if text_field is not None:
        table = read_table(path)
        require_columns(table, [text_field], "--text-field")
        rows: list[EvalRow] = []
        for row, line in zip(table.rows, table.lines, strict=True):
            if limit is not None and len(rows) >= limit:
                break
            ref = row.get(label_field)
            rows.append(EvalRow(
                id=str(row["id"]) if row.get("id") is not None else f"{table.source}:{line}",
                prompt=[Message("user", label_text(row.get(text_field)))],
                reference=None if ref is None else label_text(ref),
                meta=dict(row)))
        return rows
    examples = load_examples(path, reporter=reporter)
    if limit is not None:
        examples = examples[:limit]
    return [row_from_example(ex, label_field) for ex in examples]


def row_from_example(ex: Example, label_field: str = "label") -> EvalRow:
    """An ``EvalRow`` from a training example: the last assistant turn is the reference."""
    msgs = list(ex.messages)
    reference = None
    if msgs and msgs[-1].role == "assistant":
        reference = msgs[-1].content.strip()
        msgs = msgs[:-1]
    if label_field in ex.meta and ex.meta[label_field] is not None:
        reference = label_text(ex.meta[label_field])
    if ex.text is not None:
        reference = ex.text
    ident = ex.meta.get("id")
    return EvalRow(id=str(ident) if ident is not None else f"{ex.source}:{ex.line}",
                   prompt=msgs, reference=reference, meta=dict(ex.meta), example=ex)


def require_references(rows: Sequence[EvalRow], label_field: str, task: str) -> None:
    """Refuse rows without a reference, listing each, before any model runs.

    Raises:
        DataError: one finding per row without a reference.
    """
    missing = [r.id for r in rows if r.reference is None or r.reference == ""]
    if missing:
        raise DataError(
            f"{len(missing)} row(s) have no reference for the {task} task",
            findings=[f"{i}: no {label_field!r} field and no assistant answer" for i in missing],
            hint="name the reference column with --label-field, or add the answers")
    if not rows:
        raise DataError(f"no rows to evaluate for the {task} task",
                        hint="check the file and --limit")
