"""One HTML report of checked data files: summaries, plots, fields, labels and findings.

The report is a folder: ``index.html``, one sub-folder of PNG plots per file (linked by
relative paths, so the folder can be moved or zipped whole) and ``profile.json`` with the
same numbers for machines. The HTML is static: no scripts, no network, every value
escaped. This module knows nothing of the command line and never loads a model.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

from tunelab.errors import DataError
from tunelab.gate.check import CheckResult
from tunelab.gate.profile import Profile, profile_from_check, save_plots

# Findings listed per file; the rest are counted (the JSON report from `data check
# --json` has them all).
MAX_LISTED = 200

_TITLES = {"rows": "Rows", "findings": "Findings by code", "token_lengths": "Token lengths",
           "turns": "Turns per row", "fields": "Fields", "labels": "Labels"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.error { color: #b23b3b; font-weight: 600; } .warning { color: #9a6a10; }
.ok { color: #3b7d3b; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
"""


def _slug(index: int, source: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).name)[:60] or "data"
    return f"{index:02d}-{stem}"


def write_report(out_dir: str | Path, results: Sequence[CheckResult],
                 model: str | None = None) -> Path:
    """Write the HTML report (with plots and ``profile.json``) for checked files.

    Args:
        out_dir: the report folder; created if needed, files in it are replaced.
        results: one ``check_data`` result per file.
        model: the model whose tokenizer and chat template measured the lengths, named
            in the report; ``None`` when lengths were not measured.

    Returns:
        The path of ``index.html``.

    Raises:
        DataError: the folder cannot be written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        sections, summaries = [], []
        for i, result in enumerate(results, start=1):
            profile = profile_from_check(result)
            slug = _slug(i, result.source)
            plots = save_plots(profile, out / slug)
            sections.append(_section(i, profile, result, {k: f"{slug}/{v.name}"
                                                       for k, v in plots.items()}))
            summaries.append(profile.summary())
        page = _page(sections, results, model)
        index = out / "index.html"
        index.write_text(page, encoding="utf-8")
        (out / "profile.json").write_text(
            json.dumps({"model": model, "files": summaries}, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise DataError(f"{out}: the report cannot be written ({e.strerror or e})",
                        hint="pick a folder you may write to with --report / --out") from None
    return index


def _page(sections: list[str], results: Sequence[CheckResult], model: str | None) -> str:
    ok = all(r.ok for r in results)
    verdict = ('<span class="ok">no errors</span>' if ok
               else '<span class="error">errors found: fix them before training</span>')
    lengths = (f"token lengths with the chat template of <code>{html.escape(model)}</code>"
               if model else "token lengths not measured (no model given)")
    rows = "".join(
        f"<tr><td><a href='#f{i}'>{html.escape(r.source)}</a></td><td>{html.escape(str(r.format))}"
        f"</td>{_num(r.rows_read)}{_num(r.accepted)}{_num(r.rejected)}{_num(len(r.errors))}"
        f"{_num(len(r.warnings))}</tr>"
        for i, r in enumerate(results, start=1))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>tunelab data report</title>"
        f"<style>{_STYLE}</style></head><body>\n"
        f"<h1>tunelab data report</h1><p>{len(results)} file(s): {verdict}; {lengths}.</p>\n"
        "<table><tr><th>file</th><th>format</th><th>rows read</th><th>accepted</th>"
        f"<th>rejected</th><th>errors</th><th>warnings</th></tr>{rows}</table>\n"
        + "\n".join(sections) + "\n</body></html>\n")


def _num(value: int) -> str:
    return f"<td class='num'>{value:,}</td>"


def _section(index: int, p: Profile, result: CheckResult, plots: dict[str, str]) -> str:
    parts = [f"<h2 id='f{index}'>{html.escape(p.source)}</h2>"]
    facts = [("format", p.format), ("rows read", f"{p.rows_read:,}"),
             ("accepted", f"{p.accepted:,}"), ("rejected", f"{p.rejected:,}"),
             ("errors", f"{p.errors:,}"), ("warnings", f"{p.warnings:,}")]
    if p.token_lengths is not None:
        s = p.summary()["tokens"]
        facts += [("tokens (min / median / p95 / max)",
                   f"{s['min']} / {s['median']} / {s['p95']} / {s['max']}"),
                  (f"rows over {p.max_length} tokens", f"{s['over_max_length']:,}")]
    parts.append(_table(["", ""], [[k, v] for k, v in facts]))
    parts += [f"<p class='warning'>{html.escape(n)}</p>" for n in p.notes]
    for name, src in plots.items():
        title = _TITLES.get(name, name)
        parts.append(f"<figure><img src='{html.escape(src)}' alt='{html.escape(title)}' "
                     f"data-plot='{name}'><figcaption>{html.escape(title)}</figcaption></figure>")
    if p.columns:
        parts.append("<h3>Fields</h3>" + _table(
            ["field", "present", "missing or null", "empty"],
            [[k, v["present"], v["missing"], v["empty"]] for k, v in p.columns.items()]))
    if p.labels:
        total = sum(p.labels.values())
        parts.append("<h3>Labels</h3>" + _table(
            ["label", "rows", "share"],
            [[k, v, f"{v / total:.1%}"] for k, v in p.labels.items()]))
    parts.append(_findings(result))
    return "\n".join(parts)


def _findings(result: CheckResult) -> str:
    findings = result.errors + result.warnings  # errors first, each by line
    if not findings:
        return "<h3>Findings</h3><p class='ok'>none</p>"
    shown = findings[:MAX_LISTED]
    rows = [[f.line, "<span class='{0}'>{0}</span>".format(html.escape(f.severity)), f.code,
             f.field or "", f.message] for f in shown]
    more = len(findings) - len(shown)
    tail = (f"<p>... and {more:,} more; <code>tunelab data check --json</code> lists every one.</p>"
            if more > 0 else "")
    return (f"<h3>Findings ({len(findings):,})</h3>"
            + _table(["line", "severity", "code", "field", "message"], rows, raw_col=1) + tail)


def _table(header: list[str], rows: list[list], raw_col: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            if isinstance(value, int) and not isinstance(value, bool):
                cells.append(_num(value))
            elif i == raw_col:
                cells.append(f"<td>{value}</td>")  # markup built here from fixed strings
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
