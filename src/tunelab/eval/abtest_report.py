"""The experiment report page: verdicts, sample-ratio check, variants, differences, and
the always-valid interval over time.

The report is a folder: ``index.html``, ``report.json`` (the same numbers as
``--json``) and ``plots/``, each file written atomically. The page uses the house shell
(``tunelab.tracking.html``): static, no scripts, every value escaped. This module
knows nothing of the database or the command line: it lays out the dict that
``tunelab.recipes.experiment`` computed.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import Any

from tunelab.errors import DataError
from tunelab.files import write_json_atomic, write_text_atomic
from tunelab.tracking.html import figure, page, table
from tunelab.tracking.plots import COLORS, new_figure, save_png

_VARIANT_COLUMNS = (("variant", "variant"), ("model", "model"), ("weight", "weight"),
                    ("requests", "requests"), ("errors", "errors"),
                    ("latency_p50_ms", "latency p50 ms"), ("latency_p99_ms", "latency p99 ms"),
                    ("rated", "rated"), ("thumbs_up_rate", "thumbs-up rate"),
                    ("scored", "scored"), ("mean_score", "mean score"),
                    ("feedback", "with feedback"), ("correction_rate", "correction rate"))


def write_experiment_report(out_dir: str | Path, report: dict[str, Any]) -> Path:
    """Write the experiment report folder.

    Args:
        out_dir: the folder; created if needed, files in it are replaced.
        report: the report's JSON (as ``--json`` prints it).

    Returns:
        The path of ``index.html``.

    Raises:
        DataError: a file of the report cannot be written.
    """
    out = Path(out_dir)
    srm = report["srm"]
    verdicts = "".join(
        f"<p class='{'ok' if v['decision'] == 'better' else 'bad' if v['decision'] == 'worse' else 'warning'}'>"
        f"{escape(v['text'])}</p>" for v in report["verdicts"])
    srm_line = (f"<p class='{'bad' if srm['alarm'] else 'ok'}'>sample ratio: "
                f"{escape(srm_text(srm))}</p>")
    sections = [f"<h1>Experiment {escape(report['experiment'])}</h1>",
                f"<p>control: {escape(report['control'])}; unit: {escape(report['unit'])}; "
                f"database: {escape(str(report.get('db')))}; since: "
                f"{escape(str(report.get('since') or 'the start'))}</p>",
                verdicts, srm_line, "<h2>Variants</h2>",
                table([t for _, t in _VARIANT_COLUMNS],
                      [[v[k] for k, _ in _VARIANT_COLUMNS] for v in report["variants"]]),
                "<h2>Differences against the control</h2>",
                table(["treatment", "metric", "control", "treatment value", "difference",
                       f"{1 - report['alpha']:.0%} interval", "p-value", "method"],
                      [[d["treatment"], d["metric"], d["control_value"], d["treatment_value"],
                        d["estimate"], _interval(d["low"], d["high"]), d["p_value"], d["method"]]
                       for d in report["differences"]]),
                "<h2>Sequential decision (thumbs-up rate)</h2>",
                "<p>The always-valid interval may be looked at any day: the chance that it "
                "ever excludes 0 when there is no difference stays below alpha.</p>"]
    for seq in report["sequential"]:
        if seq["looks"]:
            src = f"plots/sequence_{re.sub(r'[^A-Za-z0-9_.-]+', '_', seq['treatment'])[:60]}.png"
            save_png(_sequence_plot(seq), out / src, error=DataError)
            sections.append(figure(src, f"{seq['treatment']} minus {seq['control']}: "
                                        "thumbs-up rate, always-valid interval", "sequence"))
    index = write_text_atomic(out / "index.html",
                              page(f"tunelab experiment: {report['experiment']}", sections),
                              error=DataError)
    write_json_atomic(out / "report.json", report, error=DataError)
    return index


def _interval(low: float | None, high: float | None) -> str:
    return "n/a" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"


def srm_text(srm: dict[str, Any]) -> str:
    """The sample-ratio check in one line: the split, the test, and whether it alarms."""
    split = ", ".join(f"{v} {n:,} (expected {srm['expected'][v]:,.0f})"
                      for v, n in srm["observed"].items())
    if srm["p_value"] is None:
        return f"{split}; nothing to test"
    verdict = "MISMATCH: do not trust the differences" if srm["alarm"] else "matches the weights"
    chi2 = "infinite (units in a variant without weight)" if srm["chi2"] is None \
        else f"{srm['chi2']:.2f}"
    return (f"{split}; chi-square {chi2}, p = {srm['p_value']:.3g} "
            f"(alarm below {srm['threshold']}): {verdict}; units: {srm['units_counted']}")


def _sequence_plot(seq: dict[str, Any]) -> Any:
    """The estimate and its always-valid interval (per look, and intersected) against n."""
    looks = seq["looks"]
    n = [x["n"] for x in looks]
    fig, ax = new_figure()
    ax.fill_between(n, [x["low"] * 100 for x in looks], [x["high"] * 100 for x in looks],
                    color=COLORS[0], alpha=0.2, label="always-valid interval at the look")
    ax.plot(n, [x["estimate"] * 100 for x in looks], color=COLORS[0], label="difference")
    ax.axhline(0, color="#888", linewidth=1)
    ax.set_xlabel("rated responses (both variants)")
    ax.set_ylabel("thumbs-up rate difference, points")
    ax.legend(loc="best", fontsize="small")
    return fig
