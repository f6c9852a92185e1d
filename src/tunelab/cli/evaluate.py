"""`tunelab eval`: arguments, printing and exit codes.

``register`` adds both commands. `eval` exits 0 on success and 1 when ``--fail-on-bias``
is given and a fairness threshold is exceeded; with ``--json`` the last line printed is
one JSON object. Errors that stop a command are raised as ``TunelabError`` and printed
by ``tunelab.cli.main``.
"""

from __future__ import annotations

import argparse
import json
import sys

from tunelab.cli import exits
from tunelab.cli.args import non_negative_int, positive_int, rate
from tunelab.config.evaluation import DEFAULT_MAX_NEW_TOKENS, EvalSettings
from tunelab.config.schema import DEFAULT_RUNS_DIR
from tunelab.errors import ConfigError

TASKS = ("classify", "regress", "generate", "perplexity", "bbq", "tool_call")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the top-level sub-parsers."""
    e = sub.add_parser(
        "eval", help="evaluate models: classify, regress, generate, perplexity, bbq, tool_call",
        description="Evaluate one model, or compare several on the same rows, with slices, "
                    "fairness probes, a review sheet and an HTML report.")
    e.add_argument("model", nargs="?", default=None,
                   help="a run folder or name, or a model reference (store name, folder)")
    e.add_argument("--compare", nargs="+", default=[], metavar="MODEL",
                   help="more models on the same rows; the first model is the baseline")
    e.add_argument("--data", required=True, metavar="FILE", help="the rows to evaluate")
    e.add_argument("--task", choices=TASKS, default=None,
                   help="default: the run's own task, else classify")
    e.add_argument("--config", default=None, metavar="YAML", help="evaluation settings file")
    e.add_argument("--text-field", default=None, metavar="F", help="the column with the prompt")
    e.add_argument("--label-field", default=None, metavar="L",
                   help="the column with the label / reference (default: label)")
    e.add_argument("--labels", default=None, metavar="a,b,c", help="the classes, in order")
    e.add_argument("--label-names", default=None, metavar="0=negative,1=positive",
                   help="the word the prompt uses for each label")
    e.add_argument("--system", default=None,
                   help="the system prompt (default: the run's task, else built per task)")
    e.add_argument("--template", default=None, metavar="TEXT",
                   help="the user turn with {text} (and {labels}) (default: the run's task)")
    e.add_argument("--method", choices=("likelihood", "generate"), default=None,
                   help="classify/bbq: score each label word, or match the free answer "
                        "(default: the run's task's, likelihood; else generate)")
    e.add_argument("--abstain-below", type=rate, default=None, metavar="P",
                   help="classify: no answer when the top label probability is under P")
    e.add_argument("--normalizer", choices=("exact", "gsm8k", "last_number", "number"),
                   default=None, help="generate: how answers are compared for exact match")
    e.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="the first N rows")
    e.add_argument("--max-new-tokens", type=positive_int, default=None, metavar="N",
                   help="most tokens per answer (default by task: "
                        f"{', '.join(f'{k} {v}' for k, v in DEFAULT_MAX_NEW_TOKENS.items())})")
    e.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=f"prompts per forward pass (default {_default('batch_size')})")
    e.add_argument("--slice-by", default=None, metavar="F1,F2",
                   help="per-slice metrics by fields (length, label, or any column)")
    e.add_argument("--group-field", default=None, metavar="F",
                   help="classify: demographic parity and equalized odds across this field")
    e.add_argument("--counterfactual", nargs="?", const="", default=None, metavar="CATS",
                   help="swap demographic terms in the prompts (all categories, or a,b)")
    e.add_argument("--terms", default=None, metavar="YAML", help="extra counterfactual terms")
    e.add_argument("--fail-on-bias", action="store_true",
                   help="exit 1 when a fairness threshold of the config is exceeded")
    e.add_argument("--review", type=non_negative_int, default=None, metavar="N",
                   help="write a human review sheet of N rows into the report folder")
    e.add_argument("--bootstrap", type=positive_int, default=None, metavar="N",
                   help=f"paired-bootstrap resamples for --compare (default {_default('bootstrap_samples')})")
    e.add_argument("--seed", type=non_negative_int, default=None,
                   help=f"seed of the bootstrap and the review sheet (default {_default('seed')})")
    e.add_argument("--report", default=None, metavar="DIR", help="write the HTML report here")
    e.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                   help=f"where run names are looked up (default: {DEFAULT_RUNS_DIR})")
    e.add_argument("--json", action="store_true", help="print the report as one JSON line last")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_eval)


def _default(field: str) -> object:
    """The schema's default of an evaluation setting, for help texts."""
    return EvalSettings.model_fields[field].default


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def _names(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    out, bad = {}, []
    for part in _split(text) or []:
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            bad.append(f"--label-names: {part!r} is not LABEL=WORD (e.g. 0=negative)")
        out[key.strip()] = value.strip()
    if bad:
        raise ConfigError(bad)
    return out


def settings_from_args(a: argparse.Namespace):
    """The evaluation settings: the config file, then the flags that were given."""
    from tunelab.config.evaluation import load_eval_config

    overrides = {
        "task": a.task, "text_field": a.text_field, "label_field": a.label_field,
        "labels": _split(a.labels), "label_names": _names(a.label_names),
        "system_prompt": a.system, "template": a.template, "method": a.method,
        "abstain_below": a.abstain_below, "normalizer": a.normalizer,
        "limit": a.limit, "max_new_tokens": a.max_new_tokens, "batch_size": a.batch_size,
        "slice_by": _split(a.slice_by), "group_field": a.group_field,
        "counterfactual": _split(a.counterfactual), "terms": a.terms,
        "review_rows": a.review, "bootstrap_samples": a.bootstrap, "seed": a.seed,
    }
    return load_eval_config(a.config, overrides)


def cmd_eval(a: argparse.Namespace) -> int:
    from tunelab.cli.reporter import StderrReporter
    from tunelab.eval.compare import format_comparison
    from tunelab.recipes.evaluate import run_evaluation

    settings = settings_from_args(a)
    models = ([a.model] if a.model else []) + list(a.compare)
    ev = run_evaluation(models, a.data, settings, runs_dir=a.runs_dir, report_dir=a.report,
                        reporter=StderrReporter(bars=not a.no_progress))
    report = ev.report
    print(format_summary(report))
    if report["comparison"]:
        print(format_comparison(report["comparison"]))
    if ev.report_path is not None:
        print(f"report: {ev.report_path}")
    failures = report["bias_failures"]
    if failures:
        print("fairness thresholds exceeded:\n" + "\n".join(f"  {f}" for f in failures),
              file=sys.stderr)
    if a.json:
        print(json.dumps(report, default=str))
    return exits.PROBLEMS if a.fail_on_bias and failures else exits.OK


_HEADLINE = {"classify": ("accuracy", "macro_f1", "micro_f1", "ece", "unparseable"),
             "regress": ("mae", "rmse", "r2", "pearson", "spearman", "unparseable"),
             "generate": ("exact_match", "rouge_l", "bleu", "chrf", "unparseable"),
             "perplexity": ("loss", "perplexity", "tokens"),
             "bbq": ("accuracy", "accuracy_ambig", "accuracy_disambig", "bias_disambig",
                     "bias_ambig", "unparseable"),
             "tool_call": ("correct_call_rate", "name_accuracy", "argument_accuracy",
                           "valid_json_rate", "schema_valid_rate", "false_call_rate",
                           "missed_call_rate")}


def _num(v: object) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def format_summary(report: dict) -> str:
    """The headline metrics per model, the confusion matrix, worst slices and probes."""
    keys = _HEADLINE[report["task"]]
    lines = [f"{report['task']} on {report['rows']} rows of {report['data']}",
             f"{'model':<36}" + "".join(f"{k:>18}" for k in keys)]
    for model, m in report["results"].items():
        lines.append(f"{model[-35:]:<36}" + "".join(f"{_num(m.get(k)):>18}" for k in keys))
        if report["task"] == "classify":
            cols = m["confusion_columns"]
            lines.append(f"  confusion matrix (rows: true {', '.join(m['labels'])}; columns: "
                         f"{', '.join(cols)}):")
            lines += [f"    {lab:>12} " + " ".join(f"{v:>6}" for v in row)
                      for lab, row in zip(m["labels"], m["confusion_matrix"], strict=True)]
    for model, fields in (report.get("slices") or {}).items():
        for field, rec in fields.items():
            w = rec["worst"]
            if w:
                lines.append(f"{model}: worst {field} slice {w['slice']!r} (n={w['n']}): "
                             f"{rec['primary']} {_num(w[rec['primary']])} vs "
                             f"{_num(w['overall'])} overall")
    for model, fair in (report.get("fairness") or {}).items():
        for cat, rec in (fair.get("counterfactual") or {}).items():
            if not rec["probe_rows"]:
                lines.append(f"{model}: counterfactual {cat}: no prompt mentions it")
                continue
            groups = ", ".join(f"{g} {_num(v['flip_rate'])}" for g, v in rec["groups"].items())
            lines.append(f"{model}: counterfactual {cat}: {rec['probe_rows']} prompts, flip rate "
                         f"{_num(rec['flip_rate'])} (by group: {groups}); {rec['metric']} gap "
                         f"{_num(rec['gap'])}")
        gf = fair.get("group_fairness")
        if gf:
            lines.append(f"{model}: demographic parity difference "
                         f"{_num(gf['demographic_parity_difference'])}, equalized odds gap "
                         f"{_num(gf['equalized_odds_gap'])}")
    return "\n".join(lines)
