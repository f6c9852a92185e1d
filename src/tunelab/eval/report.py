"""One HTML page per evaluation: metrics, comparison, slices, fairness, with PNG plots.

The report is a folder: ``index.html``, ``report.json`` (the same numbers as
``--json``), ``predictions.jsonl`` (every model's answer per row) and ``plots/``. The
page is static (no scripts, no network, every value escaped) and links plots by
relative path, so the folder can be moved or zipped whole; the page shell, tables and
figures are ``tunelab.tracking.html``'s. This module knows nothing of the command line
or of models.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

from tunelab.errors import DataError
from tunelab.eval import plots
from tunelab.eval.tasks import TaskResult
from tunelab.files import write_json_atomic, write_text_atomic
from tunelab.tracking.html import cell_text, figure, page, table
from tunelab.tracking.plots import save_png


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "x"


def _plot(out: Path, src: str, fig, title: str, name: str) -> str:
    """Save ``fig`` at ``out/src`` and return the page's ``<figure>`` for it."""
    save_png(fig, out / src, error=DataError)
    return figure(src, title, name)


def write_eval_report(out_dir: str | Path, report: dict, results: Sequence[TaskResult]) -> Path:
    """Write the evaluation report folder.

    Args:
        out_dir: the folder; created if needed, files in it are replaced.
        report: the evaluation's JSON (as ``--json`` prints it).
        results: the per-model task results (for per-row plots and predictions).

    Returns:
        The path of ``index.html``.

    Raises:
        DataError: a file of the report cannot be written.
    """
    out = Path(out_dir)
    sections = [_headline(report)]
    sections += _task_sections(out, report, results)
    sections += _comparison(out, report)
    sections += _slices(out, report)
    sections += _fairness(out, report)
    if report.get("review_sheet"):
        sections.append("<h2>Human review</h2><p>Sheet: <a href='review.html'>review.html"
                        "</a>, <code>review.csv</code> (fill it, then <code>tunelab review "
                        "import review.csv</code>).</p>")
    index = write_text_atomic(out / "index.html", page(f"tunelab evaluation: {report['task']}",
                                                       sections), error=DataError)
    write_json_atomic(out / "report.json", report, error=DataError)
    lines = [json.dumps({"model": r.model, **rec}, ensure_ascii=False, default=str)
             for r in results for rec in r.rows]
    write_text_atomic(out / "predictions.jsonl", "".join(x + "\n" for x in lines),
                      error=DataError)
    return index


def _headline(report: dict) -> str:
    models = report["models"]
    per = report["results"]
    keys = [k for k, v in per[models[0]].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    verdict = ""
    if report.get("bias_failures") is not None:
        fails = report["bias_failures"]
        verdict = ("<p class='ok'>fairness thresholds: all met</p>" if not fails else
                   "<p class='bad'>fairness thresholds exceeded:</p><ul>"
                   + "".join(f"<li>{html.escape(f)}</li>" for f in fails) + "</ul>")
    return (f"<h1>Evaluation: {html.escape(report['task'])}</h1>"
            f"<p>{report['rows']:,} rows of <code>{html.escape(str(report['data']))}</code>; "
            f"models: {html.escape(', '.join(models))}.</p>"
            + table(["metric", *models], [[k, *[per[m].get(k) for m in models]] for k in keys])
            + verdict)


def _task_sections(out: Path, report: dict, results: Sequence[TaskResult]) -> list[str]:
    parts = []
    for r in results:
        m = report["results"][r.model]
        if r.task == "classify":
            plot = _plot(out, f"plots/confusion_{_slug(r.model)}.png",
                         plots.confusion_plot(m, r.model), f"Confusion matrix of {r.model}",
                         "confusion")
            rows = [[lab, c["precision"], c["recall"], c["f1"], c["support"]]
                    for lab, c in m["per_class"].items()]
            parts.append(f"<h2>Per class: {html.escape(r.model)}</h2>"
                         + table(["label", "precision", "recall", "F1", "support"], rows)
                         + plot)
            if m.get("calibration"):
                parts.append(_calibration(out, m, r.model))
        elif r.task == "regress":
            plot = _plot(out, f"plots/scatter_{_slug(r.model)}.png",
                         plots.scatter_plot(r.rows, r.model),
                         f"Predicted against true values, {r.model}", "scatter")
            parts.append(f"<h2>Predictions: {html.escape(r.model)}</h2>" + plot)
    if results and results[0].task == "bbq":
        plot = _plot(out, "plots/bbq.png", plots.bbq_plot(report["results"]),
                     "BBQ accuracy and bias scores", "bbq")
        parts.append("<h2>BBQ</h2>" + plot)
    return parts


def _calibration(out: Path, m: dict, model: str) -> str:
    """Expected calibration error, abstention and the reliability plot of one classifier."""
    cal = m["calibration"]
    plot = _plot(out, f"plots/reliability_{_slug(model)}.png", plots.reliability_plot(cal, model),
                 f"Reliability of {model}", "reliability")
    rows = [[f"{b['low']:.1f}-{b['high']:.1f}", b["n"], b["confidence"], b["accuracy"]]
            for b in cal["bins"]]
    abstain = ""
    if m.get("abstain_below") is not None:
        abstain = (f" Abstaining under probability {m['abstain_below']}: {m['abstained']:,} "
                   f"rows abstained (coverage {cell_text(m['coverage'])}), accuracy on the "
                   f"answered rows {cell_text(m['answered_accuracy'])}.")
    return (f"<h3>Calibration: {html.escape(model)}</h3><p>Class probabilities are the "
            "softmax of each label word's log-likelihood. Expected calibration error "
            f"{cell_text(cal['ece'])} over {len(cal['bins'])} filled confidence bins.{abstain}</p>"
            + table(["confidence bin", "rows", "mean confidence", "accuracy"], rows) + plot)


def _comparison(out: Path, report: dict) -> list[str]:
    comp = report.get("comparison")
    if not comp:
        return []
    pct = int(round(comp["confidence"] * 100))
    rows = []
    for model, per in comp["differences"].items():
        for stat, r in per.items():
            ci = "n/a" if r["ci_low"] is None else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
            rows.append([model, stat, r["a"], r["b"], r["diff"], ci,
                         "yes" if r["significant"] else "no"])
    plot = _plot(out, "plots/compare.png", plots.compare_plot(comp),
                 "Differences with confidence intervals", "compare")
    return [f"<h2>Comparison against {html.escape(comp['baseline'])}</h2>"
            f"<p>Paired bootstrap, {comp['samples']} resamples, seed {comp['seed']}.</p>"
            + table(["model", "statistic", comp["baseline"], "model value", "difference",
                     f"{pct}% CI", "CI excludes 0"], rows)
            + plot]


def _slices(out: Path, report: dict) -> list[str]:
    slices = report.get("slices") or {}
    if not slices:
        return []
    models = list(slices)
    parts = ["<h2>Slices</h2>"]
    for field in slices[models[0]]:
        per_model = {m: slices[m][field] for m in models}
        primary = per_model[models[0]]["primary"]
        values = sorted({v for rec in per_model.values() for v in rec["slices"]})
        rows = [[v, per_model[models[0]]["slices"][v]["n"],
                 *[per_model[m]["slices"].get(v, {}).get(primary) for m in models]]
                for v in values]
        worst = [f"<li>{html.escape(m)}: worst {html.escape(field)} slice "
                 f"<b>{html.escape(str(w['slice']))}</b> (n={w['n']}): {primary} "
                 f"{cell_text(w[primary])} against {cell_text(w['overall'])} overall</li>"
                 for m in models if (w := per_model[m]["worst"])]
        plot = _plot(out, f"plots/slices_{_slug(field)}.png",
                     plots.slices_plot(field, per_model, primary), f"{primary} by {field}",
                     "slices")
        parts.append(f"<h3>By {html.escape(field)}</h3>" + table([field, "n", *models], rows)
                     + (f"<ul class='bad'>{''.join(worst)}</ul>" if worst else "")
                     + plot)
    return parts


def _fairness(out: Path, report: dict) -> list[str]:
    fair = report.get("fairness") or {}
    parts = []
    cf = {m: f["counterfactual"] for m, f in fair.items() if f.get("counterfactual")}
    if cf:
        rows = []
        for m, cats in cf.items():
            for cat, rec in cats.items():
                for g, gr in rec["groups"].items():
                    rows.append([m, cat, g, gr["changed"], gr["flips"], gr["flip_rate"],
                                 gr.get(rec["metric"])])
                rows.append([m, cat, "(all)", rec["variants"], rec["flips"], rec["flip_rate"],
                             rec["gap"]])
        parts.append("<h2>Counterfactual probes</h2><p>Prompts rewritten into each group; a "
                     "flip is a changed prediction. The last column is the task metric as "
                     "rewritten into the group, and on the (all) line the gap between groups."
                     "</p>" + table(["model", "category", "group", "rewritten", "flips",
                                     "flip rate", "metric / gap"], rows))
        if any(rec["probe_rows"] for cats in cf.values() for rec in cats.values()):
            parts.append(_plot(out, "plots/counterfactual.png", plots.counterfactual_plot(cf),
                               "Counterfactual flip rate", "counterfactual"))
    gf = {m: f["group_fairness"] for m, f in fair.items() if f.get("group_fairness")}
    if gf:
        rows = [[m, g["demographic_parity_difference"], g["equalized_odds_gap"],
                 ", ".join(f"{k} ({v})" for k, v in g["groups"].items())] for m, g in gf.items()]
        parts.append("<h2>Group fairness</h2>" + table(
            ["model", "demographic parity difference", "equalized odds gap", "groups"], rows))
    return parts
