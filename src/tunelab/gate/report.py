"""One HTML report of checked data files: summaries, plots, fields, labels and findings.

The report is a folder: ``index.html``, one sub-folder of PNG plots per file (linked by
relative paths, so the folder can be moved or zipped whole) and ``profile.json`` with the
same numbers for machines. The HTML is static: no scripts, no network, every value
escaped (the page shell, tables and figures are ``tunelab.tracking.html``'s). This module knows nothing of the command line and never loads a model.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from tunelab.errors import DataError
from tunelab.files import write_json_atomic, write_text_atomic
from tunelab.gate.check import CheckResult
from tunelab.gate.profile import Profile, profile_from_check, save_plots
from tunelab.tracking.html import figure, page, table

# Findings listed per file; the rest are counted (the JSON report from `data check
# --json` has them all).
MAX_LISTED = 200

_TITLES = {"rows": "Rows", "findings": "Findings by code", "token_lengths": "Token lengths",
           "turns": "Turns per row", "fields": "Fields", "labels": "Labels",
           "tool_calls": "Tool calls per row"}


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
        DataError: a file of the report cannot be written.
    """
    out = Path(out_dir)
    sections, summaries = [], []
    for i, result in enumerate(results, start=1):
        profile = profile_from_check(result)
        slug = _slug(i, result.source)
        plots = save_plots(profile, out / slug)
        sections.append(_section(i, profile, result, {k: f"{slug}/{v.name}"
                                                   for k, v in plots.items()}))
        summaries.append(profile.summary())
    index = write_text_atomic(out / "index.html", _page(sections, results, model), error=DataError)
    write_json_atomic(out / "profile.json", {"model": model, "files": summaries}, error=DataError)
    return index


def _page(sections: list[str], results: Sequence[CheckResult], model: str | None) -> str:
    ok = all(r.ok for r in results)
    verdict = ('<span class="ok">no errors</span>' if ok
               else '<span class="error">errors found: fix them before training</span>')
    lengths = (f"token lengths with the chat template of <code>{html.escape(model)}</code>"
               if model else "token lengths not measured (no model given)")
    rows = [[f"<a href='#f{i}'>{html.escape(r.source)}</a>", str(r.format), r.rows_read,
             r.accepted, r.rejected, len(r.errors), len(r.warnings)]
            for i, r in enumerate(results, start=1)]
    return page("tunelab data report", [
        f"<h1>tunelab data report</h1><p>{len(results)} file(s): {verdict}; {lengths}.</p>",
        table(["file", "format", "rows read", "accepted", "rejected", "errors", "warnings"],
              rows, raw_col=0),
        *sections])


def _section(index: int, p: Profile, result: CheckResult, plots: dict[str, str]) -> str:
    parts = [f"<h2 id='f{index}'>{html.escape(p.source)}</h2>"]
    facts = [("format", str(p.format)), ("rows read", f"{p.rows_read:,}"),
             ("accepted", f"{p.accepted:,}"), ("rejected", f"{p.rejected:,}"),
             ("errors", f"{p.errors:,}"), ("warnings", f"{p.warnings:,}")]
    if p.token_lengths is not None:
        s = p.summary()["tokens"]
        facts += [("tokens (min / median / p95 / max)",
                   f"{s['min']} / {s['median']} / {s['p95']} / {s['max']}"),
                  (f"rows over {p.max_length} tokens", f"{s['over_max_length']:,}")]
    parts.append(table(["", ""], [[k, v] for k, v in facts]))
    parts += [f"<p class='warning'>{html.escape(n)}</p>" for n in p.notes]
    for name, src in plots.items():
        title = _TITLES.get(name, name)
        parts.append(figure(src, title, name))
    if p.columns:
        parts.append("<h3>Fields</h3>" + table(
            ["field", "present", "missing or null", "empty"],
            [[k, v["present"], v["missing"], v["empty"]] for k, v in p.columns.items()]))
    if p.tools is not None:
        parts.append(_tools(p.tools))
    if p.labels:
        total = sum(p.labels.values())
        parts.append("<h3>Labels</h3>" + table(
            ["label", "rows", "share"],
            [[k, v, f"{v / total:.1%}"] for k, v in p.labels.items()]))
    parts.append(_findings(result))
    return "\n".join(parts)


def _tools(tools: dict) -> str:
    """The tool counts of a file: a table of facts, then the functions declared."""
    calls = tools["calls_per_row"]
    facts = [("rows declaring functions", f"{tools['rows_with_tools']:,}"),
             ("functions per row (min / median / max)",
              "{min} / {median} / {max}".format(**tools["tools_per_row"])),
             ("rows with calls", f"{tools['rows_with_calls']:,}"),
             ("calls", f"{tools['calls']:,}"),
             ("calls per row (min / median / p95 / max)",
              f"{calls['min']} / {calls['median']} / {calls['p95']} / {calls['max']}"),
             ("results (tool turns)", f"{tools['results']:,}"),
             ("unanswered calls", f"{tools['unanswered_calls']:,}"),
             ("calls left open at the end of a row", f"{tools['open_calls']:,}")]
    facts += [(f"findings: {code}", f"{n:,}") for code, n in tools["tool_findings"].items()]
    out = "<h3>Tools</h3>" + table(["", ""], [[k, v] for k, v in facts])
    if tools["functions"]:
        out += table(["function", "rows declaring it"],
                     [[name, f"{n:,}"] for name, n in tools["functions"].items()])
    return out


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
            + table(["line", "severity", "code", "field", "message"], rows, raw_col=1) + tail)

