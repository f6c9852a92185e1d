"""One HTML page per evaluation: metrics, comparison, slices, fairness, with PNG plots.

The report is a folder: ``index.html``, ``report.json`` (the same numbers as
``--json``), ``predictions.jsonl`` (every model's answer per row) and ``plots/``. The
page is static (no scripts, no network, every value escaped) and links plots by
relative path, so the folder can be moved or zipped whole. This module knows nothing
of the command line or of models.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

from tunelab.data.table import write_json, write_text
from tunelab.errors import DataError
from tunelab.eval import plots
from tunelab.eval.tasks import TaskResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #b23b3b; font-weight: 600; } .ok { color: #3b7d3b; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "x"


def _fmt(v: object) -> str:
    if isinstance(v, bool) or v is None:
        return "n/a" if v is None else str(v).lower()
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f"<td class='num'>{html.escape(_fmt(v))}</td>" if isinstance(v, (int, float))
            and not isinstance(v, bool) else f"<td>{html.escape(_fmt(v))}</td>" for v in row)
        + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(src: str, title: str, name: str) -> str:
    return (f"<figure><img src='{html.escape(src)}' alt='{html.escape(title)}' "
            f"data-plot='{html.escape(name)}'><figcaption>{html.escape(title)}</figcaption></figure>")


def write_eval_report(out_dir: str | Path, report: dict, results: Sequence[TaskResult]) -> Path:
    """Write the evaluation report folder.

    Args:
        out_dir: the folder; created if needed, files in it are replaced.
        report: the evaluation's JSON (as ``--json`` prints it).
        results: the per-model task results (for per-row plots and predictions).

    Returns:
        The path of ``index.html``.

    Raises:
        DataError: the folder cannot be written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        sections = [_headline(report)]
        sections += _task_sections(out, report, results)
        sections += _comparison(out, report)
        sections += _slices(out, report)
        sections += _fairness(out, report)
        if report.get("review_sheet"):
            sections.append("<h2>Human review</h2><p>Sheet: <a href='review.html'>review.html"
                            "</a>, <code>review.csv</code> (fill it, then <code>tunelab review "
                            "import review.csv</code>).</p>")
        page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<title>tunelab evaluation: {html.escape(report['task'])}</title>"
                f"<style>{_STYLE}</style></head><body>\n" + "\n".join(sections)
                + "\n</body></html>\n")
        write_text(out / "index.html", page)
        write_json(out / "report.json", report)
        lines = [json.dumps({"model": r.model, **rec}, ensure_ascii=False, default=str)
                 for r in results for rec in r.rows]
        write_text(out / "predictions.jsonl", "".join(x + "\n" for x in lines))
    except OSError as e:
        raise DataError(f"{out}: the report cannot be written ({e.strerror or e})",
                        hint="pick a folder you may write to with --report") from None
    return out / "index.html"


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
            + _table(["metric", *models], [[k, *[per[m].get(k) for m in models]] for k in keys])
            + verdict)


def _task_sections(out: Path, report: dict, results: Sequence[TaskResult]) -> list[str]:
    parts = []
    for r in results:
        m = report["results"][r.model]
        if r.task == "classify":
            src = f"plots/confusion_{_slug(r.model)}.png"
            plots.save_figure(plots.confusion_plot(m, r.model), out / src)
            rows = [[lab, c["precision"], c["recall"], c["f1"], c["support"]]
                    for lab, c in m["per_class"].items()]
            parts.append(f"<h2>Per class: {html.escape(r.model)}</h2>"
                         + _table(["label", "precision", "recall", "F1", "support"], rows)
                         + _figure(src, f"Confusion matrix of {r.model}", "confusion"))
        elif r.task == "regress":
            src = f"plots/scatter_{_slug(r.model)}.png"
            plots.save_figure(plots.scatter_plot(r.rows, r.model), out / src)
            parts.append(f"<h2>Predictions: {html.escape(r.model)}</h2>"
                         + _figure(src, f"Predicted against true values, {r.model}", "scatter"))
    if results and results[0].task == "bbq":
        src = "plots/bbq.png"
        plots.save_figure(plots.bbq_plot(report["results"]), out / src)
        parts.append("<h2>BBQ</h2>" + _figure(src, "BBQ accuracy and bias scores", "bbq"))
    return parts


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
    src = "plots/compare.png"
    plots.save_figure(plots.compare_plot(comp), out / src)
    return [f"<h2>Comparison against {html.escape(comp['baseline'])}</h2>"
            f"<p>Paired bootstrap, {comp['samples']} resamples, seed {comp['seed']}.</p>"
            + _table(["model", "statistic", comp["baseline"], "model value", "difference",
                      f"{pct}% CI", "CI excludes 0"], rows)
            + _figure(src, "Differences with confidence intervals", "compare")]


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
                 f"{_fmt(w[primary])} against {_fmt(w['overall'])} overall</li>"
                 for m in models if (w := per_model[m]["worst"])]
        src = f"plots/slices_{_slug(field)}.png"
        plots.save_figure(plots.slices_plot(field, per_model, primary), out / src)
        parts.append(f"<h3>By {html.escape(field)}</h3>" + _table([field, "n", *models], rows)
                     + (f"<ul class='bad'>{''.join(worst)}</ul>" if worst else "")
                     + _figure(src, f"{primary} by {field}", "slices"))
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
                     "</p>" + _table(["model", "category", "group", "rewritten", "flips",
                                      "flip rate", "metric / gap"], rows))
        if any(rec["probe_rows"] for cats in cf.values() for rec in cats.values()):
            plots.save_figure(plots.counterfactual_plot(cf), out / "plots/counterfactual.png")
            parts.append(_figure("plots/counterfactual.png", "Counterfactual flip rate",
                                 "counterfactual"))
    gf = {m: f["group_fairness"] for m, f in fair.items() if f.get("group_fairness")}
    if gf:
        rows = [[m, g["demographic_parity_difference"], g["equalized_odds_gap"],
                 ", ".join(f"{k} ({v})" for k, v in g["groups"].items())] for m, g in gf.items()]
        parts.append("<h2>Group fairness</h2>" + _table(
            ["model", "demographic parity difference", "equalized odds gap", "groups"], rows))
    return parts
