"""`tunelab eval`: load rows and models, run the task, compare, slice, probe, report.

The recipe is the only place that sees the whole evaluation: it loads each model in
turn (one in memory at a time), wraps it as callables (``tunelab.eval.callables``),
runs the task (``tunelab.eval.runner``) on the same rows, then the slices, fairness
probes, paired comparison, review sheet and HTML report. It returns the report as a dict and never sets an exit code.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config.evaluation import EvalSettings, with_task
from tunelab.config.schema import DEFAULT_RUNS_DIR
from tunelab.errors import ConfigError
from tunelab.eval.callables import load_callables
from tunelab.eval.compare import compare_results
from tunelab.eval.fairness import bias_failures, counterfactual_probe, group_fairness
from tunelab.eval.report import write_eval_report
from tunelab.eval.review import write_review_sheet
from tunelab.eval.rows import EvalRow
from tunelab.eval.runner import EvalData, fit_text_field, load_eval_data, task_runner
from tunelab.eval.slices import all_slices
from tunelab.eval.tasks import ModelCallables, TaskResult
from tunelab.eval.terms import load_terms
from tunelab.models.runs import run_task
from tunelab.tracking.reporter import SILENT, Reporter


@dataclass
class Evaluation:
    """What an evaluation produced: the JSON report and each model's task result."""

    report: dict
    results: list[TaskResult] = field(default_factory=list)
    report_path: Path | None = None


def _check_settings(s: EvalSettings, n_models: int, report_dir: str | None) -> None:
    problems = []
    if s.review_rows and report_dir is None:
        problems.append("review_rows: the review sheet is written into the report folder; "
                        "add --report DIR")
    if s.group_field and s.task != "classify":
        problems.append(f"group_field: group fairness is for the classify task, not {s.task!r}")
    if s.counterfactual is not None and s.task in ("perplexity", "bbq"):
        problems.append(f"counterfactual: probes rewrite prompts of classify, regress or "
                        f"generate rows, not {s.task!r}")
    if s.method == "likelihood" and s.task not in ("classify", "bbq"):
        problems.append(f"method: likelihood scoring is for classify and bbq, not {s.task!r}")
    if s.task == "tool_call":
        for key, flag in (("text_field", "--text-field"), ("system_prompt", "--system"),
                          ("template", "--template")):
            if getattr(s, key) is not None:
                problems.append(f"{key}: the tool_call task asks each row's own conversation "
                                f"with its tools, as training rendered it; remove {flag}")
    if n_models == 0:
        problems.append("no model given: name one, or several with --compare")
    if problems:
        raise ConfigError(problems)


def _fairness(s: EvalSettings, data: EvalData, result: TaskResult,
              run: Callable[[list[EvalRow]], TaskResult]) -> dict:
    out: dict = {}
    if s.counterfactual is not None:
        terms = load_terms(s.terms)
        out["counterfactual"] = counterfactual_probe(data.rows, terms, s.counterfactual, run)
    if s.group_field:
        groups = [str(r.meta.get(s.group_field)) for r in data.rows]
        if all(r.meta.get(s.group_field) is None for r in data.rows):
            raise ConfigError([f"group_field: no row has the field {s.group_field!r}"])
        assert data.label_set is not None  # group_field is for classify (_check_settings)
        out["group_fairness"] = group_fairness(
            [rec["reference"] for rec in result.rows], [rec["predicted"] for rec in result.rows],
            groups, list(data.label_set.labels))
    if s.task == "bbq":
        out["bbq_metrics"] = {k: result.metrics[k] for k in ("accuracy_ambig", "accuracy_disambig",
                                                            "bias_ambig", "bias_disambig")}
    return out


def _run_task_settings(models: Sequence[str], data_path: str, s: EvalSettings, runs_dir: str,
                       reporter: Reporter) -> EvalSettings:
    """The settings with the first model's task (when it is a run that declares one) filling
    in what was not given, so the run is asked the prompt it was trained on."""
    if not models:
        return s
    task = run_task(models[0], runs_dir)
    for other in models[1:]:
        if task is not None and run_task(other, runs_dir) not in (None, task):
            reporter.warning(f"{other} was trained for another task than {models[0]}; every "
                             f"model is asked {models[0]}'s prompt")
    if task is None:
        return s
    merged = with_task(s, task)
    if merged is s:
        reporter.warning(f"{models[0]} was trained for the {task.type} task; evaluating it as "
                         f"{s.task} asks prompts it never saw")
        return s
    if "text_field" not in s.model_fields_set:
        merged = fit_text_field(merged, task, data_path, reporter)
    words = f", answers {', '.join(merged.label_names.get(x, x) for x in merged.labels or [])}" \
        if merged.task == "classify" else ""
    reporter.info(f"task from the run {models[0]}: {merged.task}, reading {merged.text_field!r}"
                  f"{words}, scored by {merged.method or 'its answers'}")
    return merged


def run_evaluation(models: Sequence[str], data_path: str, settings: EvalSettings,
                   runs_dir: str = DEFAULT_RUNS_DIR, report_dir: str | None = None,
                   reporter: Reporter = SILENT,
                   loader: Callable[[str], ModelCallables] | None = None) -> Evaluation:
    """Evaluate one or more models on the same rows of a data file.

    Args:
        models: model references or run folders; the first is the comparison baseline.
        data_path: the data file.
        settings: the evaluation settings.
        runs_dir: where run names are looked up.
        report_dir: write the HTML report (and review sheet) here; None writes none.
        reporter: progress lines and bars.
        loader: builds a model's callables from its reference (tests pass their own);
            default: ``load_callables``.

    Returns:
        The ``Evaluation``; ``report["bias_failures"]`` lists exceeded fairness
        thresholds (None when no fairness probe ran).

    Raises:
        ConfigError: settings that do not fit together.
        DataError: unreadable data or rows the task cannot use.
        ModelError, StoreError: a model cannot be loaded.
    """
    s = _run_task_settings(models, data_path, settings, runs_dir, reporter)
    _check_settings(s, len(models), report_dir)
    max_new_tokens = s.max_new_tokens
    assert max_new_tokens is not None  # EvalSettings fills in the task's default
    data = load_eval_data(data_path, s, reporter)
    load = loader or (lambda ref: load_callables(ref, runs_dir, max_new_tokens, s.batch_size,
                                                 reporter))
    results: list[TaskResult] = []
    fairness: dict[str, dict] = {}
    for ref in models:
        reporter.info(f"evaluating {ref} on {len(data.rows)} rows ({s.task})")
        model = load(ref)
        run = task_runner(s, data, model)
        result = run(data.rows)
        if any(r.model == result.model for r in results):
            result.model = ref  # two runs of the same name: tell them apart by reference
        results.append(result)
        probes = _fairness(s, data, result, run)
        if probes:
            fairness[result.model] = probes
        del model, run
        gc.collect()  # one model in memory at a time
    report = _report(data_path, data, s, results, fairness)
    ev = Evaluation(report, results)
    if report_dir is not None:
        if s.review_rows:
            write_review_sheet(report_dir, data.rows, results, s.review_rows, s.seed)
            report["review_sheet"] = str(Path(report_dir) / "review.csv")
        ev.report_path = write_eval_report(report_dir, report, results)
    return ev


def _report(data_path: str, data: EvalData, s: EvalSettings, results: list[TaskResult],
            fairness: dict[str, dict]) -> dict:
    first = results[0]
    slices = None
    fields = list(s.slice_by)
    if s.task == "bbq":
        fields = [f for f in ("category", "context_condition", "question_polarity") if f not in
                  fields] + fields
    if fields:
        slices = {r.model: all_slices(r, data.rows, fields, s.length_buckets) for r in results}
    comparison = None
    if len(results) > 1:
        comparison = compare_results(results, s.bootstrap_samples, s.seed, s.confidence)
    failures = None
    if fairness:
        limits = s.thresholds.model_dump()
        failures = [f"{m}: {line}" for m, rec in fairness.items()
                    for line in bias_failures(rec, limits)]
    return {**first.metrics, "task": s.task, "data": str(data_path), "rows": len(data.rows),
            "models": [r.model for r in results],
            "results": {r.model: r.metrics for r in results},
            "slices": slices, "comparison": comparison, "fairness": fairness or None,
            "bias_failures": failures, "review_sheet": None,
            "settings": s.model_dump(mode="json")}
