"""Task rendering: the one prompt a task asks, in training, evaluation and serving.

A run's ``task`` (``tunelab.config.task.TaskSettings``) turns a table row into a chat:
an optional system turn, then the row's text in the question template as the user
turn; the answer is the label's word (classify), the number (regress) or the reference
text (generate). ``task_chat`` is the only function that builds that prompt: training
renders each row with it (``load_task_examples``), and evaluation and serving call it
on the text they are given, so a model is asked exactly what it was trained on.

``LabelSet`` maps a table's labels (SST-2's ``0``/``1``) to the words the model answers
(``negative``/``positive``) and back. This module reads tables but knows nothing of
tokenizers or models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tunelab.config.task import LABELS_SLOT, TEXT_SLOT, TaskSettings
from tunelab.data.example import Example, Message
from tunelab.data.extra_formats import TEXT_KEYS
from tunelab.data.findings import ERROR, WARNING, Finding, cap_per_code, capped_lines, show_value
from tunelab.data.table import Table, label_text, read_table
from tunelab.errors import ConfigError, DataError
from tunelab.tracking.reporter import SILENT, Reporter

# The user turn of a classify task when the config gives no template: small chat models
# answer a question with a label far more often than they obey a system prompt alone.
CLASSIFY_TEMPLATE = f"Text: {TEXT_SLOT}\n\nWhich label fits the text: {LABELS_SLOT}?"
REGRESSION_SYSTEM_PROMPT = "Answer with a single number and nothing else."


@dataclass(frozen=True)
class LabelSet:
    """The classes as written in the table, and the word the model answers for each.

    Args:
        labels: the table's labels, in confusion-matrix order.
        names: label -> word; labels without an entry are answered as written.
    """

    labels: tuple[str, ...]
    names: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(cls, labels: Sequence[str], names: dict[str, str] | None = None) -> LabelSet:
        """Check and build a label set.

        Raises:
            ConfigError: a name is given for an unknown label, or two labels share a word.
        """
        names = names or {}
        problems = [f"label_names: {k!r} is not one of the labels {list(labels)}"
                    for k in names if k not in labels]
        words = [names.get(lab, lab) for lab in labels]
        if len(set(w.casefold() for w in words)) != len(words):
            problems.append(f"label_names: two labels share a word ({words}); give each its own")
        if problems:
            raise ConfigError(problems)
        return cls(tuple(labels), tuple((k, names[k]) for k in labels if k in names))

    def word(self, label: str) -> str:
        """The word the model answers for one table label."""
        return dict(self.names).get(label, label)

    @property
    def words(self) -> list[str]:
        return [self.word(lab) for lab in self.labels]

    def label_of(self, word: str | None) -> str | None:
        """The table label of an answer word, or None."""
        if word is None:
            return None
        back = {self.word(lab): lab for lab in self.labels}
        return back.get(word)


@dataclass(frozen=True)
class TaskPrompt:
    """What ``task_chat`` needs: the task type, its label words, its system turn and template.

    Args:
        type: ``classify``, ``regress`` or ``generate``.
        words: classify: the label words, in label order.
        system_prompt: None builds the type's default (classify lists the words;
            generate has none); ``""`` sends no system turn.
        template: the user turn with ``{text}`` (and ``{labels}``); None: the type's default.
    """

    type: str
    words: tuple[str, ...] = ()
    system_prompt: str | None = None
    template: str | None = None

    @classmethod
    def of(cls, task: TaskSettings, label_set: LabelSet | None) -> TaskPrompt:
        """The prompt of a configured task (classify needs its resolved label set)."""
        words = tuple(label_set.words) if label_set is not None else ()
        return cls(task.type, words, task.system_prompt, task.template)

    @property
    def system(self) -> str | None:
        """The system turn sent, or None for none."""
        if self.system_prompt is not None:
            return self.system_prompt or None
        if self.type == "classify":
            return classification_system_prompt(self.words)
        if self.type == "regress":
            return REGRESSION_SYSTEM_PROMPT
        return None

    def user_turn(self, text: str) -> str:
        """The row's text in the question template."""
        template = self.template
        if template is None:
            template = CLASSIFY_TEMPLATE if self.type == "classify" else TEXT_SLOT
        head, _, tail = template.partition(TEXT_SLOT)  # the text itself is never searched
        listed = either(self.words)
        return head.replace(LABELS_SLOT, listed) + text + tail.replace(LABELS_SLOT, listed)


def classification_system_prompt(words: Sequence[str]) -> str:
    """The default system prompt of a classifier: the task and the allowed answers."""
    return (f"Classify the text the user sends. Reply with exactly one of these labels and "
            f"nothing else: {', '.join(words)}.")


def either(words: Sequence[str]) -> str:
    """``a, b or c``: the label words as a question lists them."""
    words = list(words)
    if not words:
        return ""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def task_chat(prompt: TaskPrompt, messages: Sequence[Message]) -> list[Message]:
    """The chat a task asks: the one function training, evaluation and serving share.

    A chat that brings its own system turn is sent as it is. Otherwise the last user
    turn is put into the task's template and the task's system turn (if any) goes first.
    """
    msgs = list(messages)
    if msgs and msgs[0].role == "system":
        return msgs
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].role == "user":
            msgs[i] = Message("user", prompt.user_turn(msgs[i].content), msgs[i].weight)
            break
    system = prompt.system
    return msgs if system is None else [Message("system", system), *msgs]


def task_answer(task: TaskSettings, label_set: LabelSet | None, reference: str) -> str:
    """The answer the model is trained to give for a row's reference."""
    if task.type == "classify":
        assert label_set is not None  # resolve_labels runs first
        return label_set.word(reference)
    return reference.strip() if task.type == "regress" else reference


def find_text_field(table: Table, task: TaskSettings, text_field: str | None = None) -> str:
    """The column the model reads: the one named (``text_field``, then the task's), or the
    table's first column among ``TEXT_KEYS``.

    Raises:
        DataError: the named column is missing, or none is named and none is found.
    """
    name = text_field or task.text_field
    if name is not None:
        if name not in table.columns:
            raise DataError(f"{table.source}: no column {name!r} to read the text from",
                            hint=f"the columns are {', '.join(table.columns)}; name the text "
                                 "column with task.text_field, with text_field on this data "
                                 "source if only this file differs, or with --text-field")
        return name
    for key in TEXT_KEYS:
        if key in table.columns and key != task.label_field:
            return key
    raise DataError(f"{table.source}: no text column found (looked for {', '.join(TEXT_KEYS)})",
                    hint=f"the columns are {', '.join(table.columns)}; set task.text_field "
                         "to the column the model should read")


def _require_label_column(table: Table, label_field: str) -> None:
    if label_field not in table.columns:
        raise DataError(f"{table.source}: no column {label_field!r} with the answers",
                        hint=f"the columns are {', '.join(table.columns)}; set "
                             "task.label_field (or --label-field) to the answer column")


def resolve_task(task: TaskSettings, paths: Sequence[str | Path],
                 reporter: Reporter = SILENT) -> tuple[TaskSettings, LabelSet | None]:
    """The task with its text column and labels written out, as a run stores it.

    The text column is the task's, or the first of ``TEXT_KEYS`` in the first file.
    Labels given in the config keep their order; otherwise they are the sorted distinct
    values of the files' label column. Evaluation and serving then need no data to ask
    the run's prompt.

    Returns:
        ``(task, label_set)``; the label set is None unless the task classifies.

    Raises:
        DataError: a file cannot be read, lacks a column, or holds fewer than two labels.
        ConfigError: label words clash.
    """
    tables = [read_table(p) for p in paths]
    text_field = find_text_field(tables[0], task) if tables else task.text_field
    label_set = None
    if task.type == "classify":
        labels = task.label_list()
        if labels is None:
            found: set[str] = set()
            for table in tables:
                _require_label_column(table, task.label_field)
                found.update(label_text(r.get(task.label_field)) for r in table.rows)
            found.discard("")
            labels = sorted(found)
            if len(labels) < 2:
                raise DataError(f"the classify task found {len(labels)} label(s) in the "
                                f"{task.label_field!r} column: {labels}",
                                hint="a classifier needs two or more labels; check "
                                     "task.label_field")
            reporter.info(f"task labels taken from the data: {', '.join(labels)} (set "
                          "task.labels to fix the order or to name answer words)")
        label_set = LabelSet.build(labels, task.label_names())
    update: dict = {"text_field": text_field}
    if label_set is not None:
        update["labels"] = {lab: label_set.word(lab) for lab in label_set.labels}
    return task.model_copy(update=update), label_set


def task_label_set(task: TaskSettings) -> LabelSet | None:
    """The label set of a resolved classify task (None for other types).

    Raises:
        ConfigError: a classify task without labels (resolve it from its data first).
    """
    if task.type != "classify":
        return None
    labels = task.label_list()
    if labels is None:
        raise ConfigError(["task.labels: the classify task names no labels; list them"])
    return LabelSet.build(labels, task.label_names())


def load_task_examples(path: str | Path, task: TaskSettings, label_set: LabelSet | None,
                       reporter: Reporter = SILENT, text_field: str | None = None) -> list[Example]:
    """Every row of a table as a training example of the task, or a report of every problem.

    Args:
        path: a ``.jsonl``, ``.json``, ``.csv``, ``.tsv`` or ``.parquet`` file.
        task: the run's task.
        label_set: the classify task's labels (``resolve_labels``); None for others.
        reporter: told of unused columns (once per file) and of warnings.
        text_field: this file's text column when it is not the task's (SST-2's dev set
            calls it ``content`` where train says ``sentence``).

    Returns:
        One example per row, in file order: ``task_chat`` of the text plus the answer;
        every column but the text stays in ``meta`` (the label too).

    Raises:
        DataError: the file is unreadable, a column is missing, or any row has an error
            (a label outside the task's labels, a regress answer that is not a number,
            an empty answer); every such row is listed with its line.
    """
    table = read_table(path)
    text_field = find_text_field(table, task, text_field)
    _require_label_column(table, task.label_field)
    prompt = TaskPrompt.of(task, label_set)
    findings: list[Finding] = []
    examples: list[Example] = []
    for row, line in zip(table.rows, table.lines, strict=True):
        text, answer, problems = _row(row, task, label_set, text_field)
        findings += [Finding(table.source, line, fld, code, msg, sev) for fld, code, msg, sev in problems]
        if answer is None or text is None:
            continue
        meta = {k: v for k, v in row.items() if k != text_field}
        msgs = task_chat(prompt, [Message("user", text)])
        examples.append(Example([*msgs, Message("assistant", answer)], None, table.source, line, meta))
    errors = [f for f in findings if f.severity == ERROR]
    if errors:
        raise DataError(f"{path}: {len(errors):,} row(s) do not fit the {task.type} task; "
                        "nothing was loaded", findings=capped_lines(errors),
                        hint="fix the rows above, or the task section of the config")
    shown, hidden = cap_per_code([f for f in findings if f.severity != ERROR])
    for f in shown:
        reporter.warning(str(f))
    for (_, code), n in hidden.items():
        reporter.warning(f"{path}: {n} more [{code}] warning(s)")
    unused = [c for c in table.columns if c not in (text_field, task.label_field)]
    if unused:
        reporter.info(f"{path}: column(s) {', '.join(map(repr, unused))} are not read by the "
                      f"{task.type} task (kept as metadata); the model reads {text_field!r} "
                      f"and answers {task.label_field!r}")
    return examples


_Problem = tuple[str, str, str, str]  # field, code, message, severity


def _row(row: dict, task: TaskSettings, label_set: LabelSet | None,
         text_field: str) -> tuple[str | None, str | None, list[_Problem]]:
    problems: list[_Problem] = []
    raw = row.get(text_field)
    text: str | None = None
    if isinstance(raw, str):
        text = raw
        if not raw.strip():
            problems.append((text_field, "empty_content",
                             f"{text_field} is empty, so the answer has nothing to go on; "
                             "write the text or remove the row", WARNING))
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        text = label_text(raw)
    else:
        problems.append((text_field, "not_string", f"{text_field} must be text, got "
                         f"{show_value(raw)}", ERROR))
    reference = label_text(row.get(task.label_field))
    field = task.label_field
    if not reference.strip():
        problems.append((field, "empty_content", f"{field} is empty, so the row teaches "
                         "nothing; fill it in or remove the row", ERROR))
        return text, None, problems
    if task.type == "classify":
        assert label_set is not None
        if reference not in label_set.labels:
            problems.append((field, "unknown_label", f"label {reference!r} is not one of the "
                             f"task's labels {list(label_set.labels)}; add it to task.labels "
                             "or fix the row", ERROR))
            return text, None, problems
    if task.type == "regress" and not _is_number(reference):
        problems.append((field, "not_number", f"{field} {reference!r} is not a number, which a "
                         "regress task answers; fix the row", ERROR))
        return text, None, problems
    return text, task_answer(task, label_set, reference), problems


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def task_loader(task: TaskSettings, label_set: LabelSet | None, reporter: Reporter = SILENT,
                text_fields: dict[str, str] | None = None) -> Callable[[str | Path, str], list[Example]]:
    """A ``(path, format) -> examples`` reader for ``load_mixture`` that reads the task's rows.

    ``text_fields`` maps a path to its own text column (a data source's ``text_field``).

    Raises (when called):
        ConfigError: a source names a format other than ``auto`` (a task reads tables).
    """
    def read(path: str | Path, fmt: str) -> list[Example]:
        if fmt != "auto":
            raise ConfigError([f"{path}: format {fmt!r}: a run with a task reads the table's "
                               "task.text_field and task.label_field; remove `format` from the "
                               "source, or remove the task section to read it as " + fmt])
        return load_task_examples(path, task, label_set, reporter,
                                  (text_fields or {}).get(str(path)))
    return read
