"""The HTML page of `tunelab monitor`: traffic and drift per model, with PNG plots.

The report is a folder: ``index.html``, ``monitor.json`` (the same numbers as
``--json``) and ``plots/`` (requests and errors over time, PSI per feature against the
threshold). Every file is written atomically; the page shell, tables and figures are
``tunelab.tracking.html``'s, so the page is static and every value escaped. This module
knows nothing of the command line, the database or models: it draws a result's dict.
"""

from __future__ import annotations

import re
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from tunelab.errors import DataError
from tunelab.files import write_json_atomic, write_text_atomic
from tunelab.tracking.html import figure, page, table
from tunelab.tracking.plots import COLORS, new_figure, save_png

PSI_FLOOR = 1e-3  # the plot's left edge: a smaller PSI is drawn at it


def _time(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "x"


def write_monitor_report(out_dir: str | Path, result: dict[str, Any]) -> Path:
    """Write the monitor report folder.

    Args:
        out_dir: the folder; created if needed, files in it are replaced.
        result: ``MonitorResult.as_dict()``.

    Returns:
        The path of ``index.html``.

    Raises:
        DataError: a file of the report cannot be written.
    """
    out = Path(out_dir)
    sections = [f"<h1>tunelab monitor</h1><p>{_time(result['since'])} to "
                f"{_time(result['until'])} UTC, per {escape(result['bucket'])}; drift: PSI &gt; "
                f"{result['psi_threshold']:g} and p &lt; {result['p_value']:g}</p>"]
    if result["alerts"]:
        sections.append("<h2>Alerts</h2><ul>" + "".join(
            f"<li class='bad'>{escape(a)}</li>" for a in result["alerts"]) + "</ul>")
    for i, m in enumerate(result["models"]):
        sections += _model(out, m, i, result["psi_threshold"])
    index = write_text_atomic(out / "index.html", page("tunelab monitor", sections),
                              error=DataError)
    write_json_atomic(out / "monitor.json", result, error=DataError)
    return index


def _model(out: Path, m: dict[str, Any], i: int, threshold: float) -> list[str]:
    run = f" <small>(run {escape(m['run'])})</small>" if m["run"] else ""
    parts = [f"<h2>{escape(m['model'])}{run}</h2>"]
    t = m["traffic"]
    if t:
        parts.append(table(["start (UTC)", "requests", "errors", "p50 ms", "p99 ms", "feedback",
                            "up rate", "mean score"],
                           [[_time(b["start"]), b["requests"], b["errors"], b["latency_p50_ms"],
                             b["latency_p99_ms"], b["feedback"], b["up_rate"], b["mean_score"]]
                            for b in t]))
        parts.append(_traffic_plot(out, m, i))
    else:
        parts.append("<p>No requests in this span.</p>")
    d = m["drift"]
    if d is not None:
        cls = "bad" if d["verdict"] == "drift" else "ok" if d["verdict"] == "ok" else "warning"
        parts.append(f"<p>Drift of {d['production_prompts']:,} prompts against the training "
                     f"data: <span class='{cls}'>{escape(d['verdict'])}</span></p>")
        if d["features"]:
            parts.append(table(["feature", "PSI", "test", "statistic", "p", "prompts", "verdict"],
                               [[f["feature"], f["psi"], f["test"], f["statistic"],
                                 f"{f['p_value']:.2g}", f["production_n"],
                                 "DRIFT" if f["drifted"] else "ok"] for f in d["features"]]))
            parts.append(_psi_plot(out, m, i, threshold))
        parts += [f"<p class='warning'>{escape(n)}</p>" for n in d["notes"]]
    if m["note"]:
        parts.append(f"<p>{escape(m['note'])}</p>")
    return parts


def _traffic_plot(out: Path, m: dict[str, Any], i: int) -> str:
    fig, ax = new_figure(2.8)
    times = [datetime.fromisoformat(b["start"]) for b in m["traffic"]]
    ax.plot(times, [b["requests"] for b in m["traffic"]], marker="o", color=COLORS[0],
            label="requests")
    ax.plot(times, [b["errors"] for b in m["traffic"]], marker="o", color=COLORS[5],
            label="errors")
    ax.set_ylabel("per bucket")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    src = f"plots/{i:02d}_{_slug(m['model'])}_traffic.png"
    save_png(fig, out / src, error=DataError)
    return figure(src, f"{m['model']}: requests and errors over time", "traffic")


def _psi_plot(out: Path, m: dict[str, Any], i: int, threshold: float) -> str:
    feats = m["drift"]["features"]
    fig, ax = new_figure(0.5 + 0.35 * len(feats))
    names = [f["feature"] for f in feats]
    colors = [COLORS[5] if f["drifted"] else COLORS[0] for f in feats]
    # a log axis: a PSI of 0.01 and one of 5 both stay readable beside the threshold
    ax.barh(names, [max(f["psi"], PSI_FLOOR) for f in feats], color=colors)
    ax.axvline(threshold, color=COLORS[2], linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xscale("log")
    ax.set_xlim(left=PSI_FLOOR)
    ax.invert_yaxis()
    ax.set_xlabel("PSI (log scale)")
    ax.legend(loc="lower right")
    src = f"plots/{i:02d}_{_slug(m['model'])}_psi.png"
    save_png(fig, out / src, error=DataError)
    return figure(src, f"{m['model']}: PSI per feature (red: drifted)", "psi")
