"""An evaluation task as a function of rows: read the rows once, then score any model.

``load_eval_data`` reads and checks what a task needs before any model is loaded;
``task_runner`` binds the task's settings to one model's callables. `tunelab eval` (the
evaluate recipe) and evaluation during training (``during_training``) both use them,
so a task scores the same way in both. Nothing here loads a model or writes a report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tunelab.config.evaluation import EvalSettings
from tunelab.config.task import TaskSettings
from tunelab.data.load import load_examples
from tunelab.data.table import read_table
from tunelab.data.task import LabelSet, TaskPrompt, find_text_field
from tunelab.eval import bbq as bbq_task
from tunelab.eval.generate_tasks import run_generate
from tunelab.eval.perplexity import run_perplexity
from tunelab.eval.regress import run_regress
from tunelab.eval.rows import EvalRow, load_rows, require_references
from tunelab.eval.tasks import ModelCallables, TaskResult, run_classify
from tunelab.eval.tool_calls import run_tool_call, tool_call_rows
from tunelab.tracking.reporter import SILENT, Reporter


@dataclass
class EvalData:
    """The rows of an evaluation, the raw BBQ rows (bbq only) and the labels (classify)."""

    rows: list[EvalRow]
    bbq_rows: list[dict] | None = None
    label_set: LabelSet | None = None


def load_eval_data(path: str, s: EvalSettings, reporter: Reporter = SILENT) -> EvalData:
    """Read and check the rows the task needs, before any model is loaded.

    Args:
        path: the data file.
        s: the task's settings.
        reporter: told when the labels are taken from the data.

    Raises:
        DataError: unreadable rows, rows without references, or unknown BBQ fields;
            tool_call: rows without an assistant answer, or no tools anywhere.
        ConfigError: label names that do not fit the labels.
    """
    if s.task == "tool_call":
        examples = load_examples(path, reporter=reporter)
        return EvalData(tool_call_rows(examples[: s.limit] if s.limit else examples))
    if s.task == "bbq":
        table = read_table(path)
        bbq_rows = table.rows[: s.limit] if s.limit else table.rows
        bbq_task.check_bbq_rows(bbq_rows, table.source)
        ids = [f"{table.source}:{line}" for line in table.lines[: len(bbq_rows)]]
        # EvalRows carry the metadata for slices (category, context_condition, ...).
        eval_rows = [EvalRow(id=i, prompt=c, reference=str(r["label"]), meta=dict(r))
                     for i, r, c in zip(ids, bbq_rows, bbq_task.bbq_prompts(bbq_rows), strict=True)]
        return EvalData(eval_rows, bbq_rows)
    rows = load_rows(path, s.text_field, s.label_field, s.limit, reporter)
    if s.task != "perplexity":
        require_references(rows, s.label_field, s.task)
    label_set = None
    if s.task == "classify":
        labels = s.labels
        if labels is None:
            labels = sorted({str(r.reference) for r in rows})
            reporter.info(f"labels taken from the data: {', '.join(labels)} (set --labels to fix the "
                          "order or add labels missing from these rows)")
        label_set = LabelSet.build(labels, s.label_names)
    return EvalData(rows, None, label_set)


def fit_text_field(s: EvalSettings, task: TaskSettings, path: str,
                   reporter: Reporter = SILENT) -> EvalSettings:
    """Settings filled from a run's ``task`` (``with_task``), reading a column ``path`` has.

    When the file lacks the run's text column, the file's own text column is read
    instead, and the reporter is told. Callers skip this when the user named the column
    (``--text-field``): a named column that is missing is an error of its own.

    Raises:
        DataError: the file is unreadable, or it has no text column at all.
    """
    if s.text_field is None:
        return s
    table = read_table(path)
    if s.text_field in table.columns:
        return s
    found = find_text_field(table, task.model_copy(update={"text_field": None}))
    reporter.info(f"{path} has no {s.text_field!r} column (the run's text); "
                  f"reading {found!r} instead (set --text-field to choose)")
    return s.model_copy(update={"text_field": found})


def task_prompt(s: EvalSettings, label_set: LabelSet | None) -> TaskPrompt:
    """The prompt of the task as these settings declare it (``tunelab.data.task``)."""
    words = tuple(label_set.words) if label_set is not None else ()
    return TaskPrompt(s.task, words, s.system_prompt, s.template)


def task_runner(s: EvalSettings, data: EvalData, model: ModelCallables) -> Callable[[list[EvalRow]], TaskResult]:
    """The task as a function of rows (the counterfactual probe re-runs it on variants)."""
    prompt = task_prompt(s, data.label_set)
    if s.task == "classify":
        label_set = data.label_set
        assert label_set is not None and s.method is not None  # load_eval_data builds it
        method = s.method
        return lambda rows: run_classify(model, rows, label_set, method, prompt, s.abstain_below)
    if s.task == "regress":
        return lambda rows: run_regress(model, rows, prompt)
    if s.task == "generate":
        return lambda rows: run_generate(model, rows, s.normalizer, prompt)
    if s.task == "perplexity":
        return lambda rows: run_perplexity(model, rows)
    if s.task == "tool_call":
        return lambda rows: run_tool_call(model, rows)
    ids = [r.id for r in data.rows]
    bbq_rows = data.bbq_rows
    assert bbq_rows is not None  # load_eval_data keeps them for bbq
    bbq_method = s.method
    assert bbq_method is not None  # EvalSettings fills in the task's method
    return lambda rows: bbq_task.run_bbq(model, bbq_rows, ids, bbq_method)
