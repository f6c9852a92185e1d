"""The profile of a data file: row counts, token lengths, turns, fields, labels, as PNGs.

A profile is computed from a ``CheckResult`` (so it counts exactly the rows the check
accepted and rejected) and drawn with matplotlib's object API (``Figure``, no pyplot
and no global backend state), one PNG per plot. Plots that would be empty are not
drawn: no token lengths without a tokenizer, no labels without a label column. Files
with tool use get a ``tools`` section (``tool_counts``) and a calls-per-row plot; files
without show what they showed before.

This module knows nothing of HTML (``tunelab.gate.report`` lays the plots out) and
never loads a model: token lengths come from the tokenizer handed to the check.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.data.tool_text import uses_tools
from tunelab.data.tools import TOOL_FINDING_CODES, open_calls
from tunelab.errors import DataError
from tunelab.gate.check import DEFAULT_MAX_LENGTH, CheckResult, check_data, length_stats
from tunelab.tracking.plots import new_figure, save_png

# More distinct values than this and a ``label`` field is free text, not classes.
MAX_LABELS = 50
# Codes drawn in the findings plot; the rest are summed as "other".
_MAX_CODES = 15


@dataclass
class Profile:
    """What a data file holds, for plots and the report.

    Args:
        source: the file path as given.
        format: the format its rows were read as.
        rows_read, accepted, rejected: row counts, as in ``CheckResult``.
        finding_counts: findings per code; ``errors`` and ``warnings`` their totals.
        error_codes: the codes among them that are errors.
        token_lengths: per accepted row, or ``None`` without a tokenizer.
        max_length: the length check's limit, in tokens.
        turns: messages per accepted row (0 for plain text).
        roles: turns per role over all accepted rows.
        columns: per top-level field: rows where it is present, missing and empty.
        labels: rows per label for classification data, else ``None``.
        notes: what was not measured, and why.
    """

    source: str
    format: str | None
    rows_read: int
    accepted: int
    rejected: int
    errors: int
    warnings: int
    finding_counts: dict[str, int]
    token_lengths: list[int] | None
    max_length: int
    turns: list[int]
    roles: dict[str, int]
    columns: dict[str, dict[str, int]]
    labels: dict[str, int] | None
    error_codes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tools: dict | None = None

    def summary(self) -> dict:
        """A JSON-ready summary: counts and statistics, no per-row lists; a ``tools``
        section (``tool_counts``) only for files with tool use."""
        lengths = self.token_lengths
        tools = {} if self.tools is None else {"tools": self.tools}
        return {
            "path": self.source, "format": self.format, "rows_read": self.rows_read,
            "accepted": self.accepted, "rejected": self.rejected, "errors": self.errors,
            "warnings": self.warnings, "finding_counts": self.finding_counts,
            "tokens": None if lengths is None else {
                "max_length": self.max_length,
                "over_max_length": sum(n > self.max_length for n in lengths),
                **length_stats(lengths)},
            "turns": {**length_stats(self.turns),
                      "histogram": dict(sorted(Counter(self.turns).items()))},
            "roles": self.roles, "columns": self.columns, "labels": self.labels,
            "notes": self.notes, **tools,
        }


def tool_counts(result: CheckResult) -> dict | None:
    """How a file uses tools: declarations, calls and results per accepted row, and the
    calls the check found unanswered.

    Args:
        result: what ``check_data`` returned for the file.

    Returns:
        ``None`` when no row declares, calls or answers a tool and no tool finding was
        made (the file has no tool use); else ``rows_with_tools`` (rows declaring at least
        one function), ``rows_with_calls``, ``functions`` (rows declaring each name, most
        first), ``tools_per_row`` and ``calls_per_row`` (statistics over accepted
        conversations; calls with a ``histogram``), ``calls``, ``results`` (tool turns),
        ``unanswered_calls`` (``unanswered_call`` findings, rejected rows included),
        ``open_calls`` (calls an accepted row ends on, no result after them:
        ``tools.open_calls``) and ``tool_findings`` (findings per tool code).
    """
    chats = [e for e in result.examples if e.text is None]
    findings = Counter(f.code for f in result.findings if f.code in TOOL_FINDING_CODES)
    if not findings and not any(uses_tools(e.messages, e.tools) for e in chats):
        return None
    calls = [sum(len(m.tool_calls) for m in e.messages) for e in chats]
    declared: Counter = Counter(t["name"] for e in chats for t in e.tools)
    return {
        "rows_with_tools": sum(bool(e.tools) for e in chats),
        "rows_with_calls": sum(n > 0 for n in calls),
        "functions": dict(sorted(declared.items(), key=lambda kv: (-kv[1], kv[0]))),
        "tools_per_row": length_stats([len(e.tools) for e in chats]),
        "calls_per_row": {**length_stats(calls), "histogram": dict(sorted(Counter(calls).items()))},
        "calls": sum(calls),
        "results": sum(m.role == "tool" for e in chats for m in e.messages),
        "unanswered_calls": findings["unanswered_call"],
        "open_calls": sum(open_calls(e.messages) for e in chats),
        "tool_findings": dict(findings.most_common()),
    }


def tools_line(tools: dict) -> str:
    """The tool counts of a file in one line of text (for the command line)."""
    names = len(tools["functions"])
    calls = tools["calls_per_row"]
    return (f"tools: {tools['rows_with_tools']:,} row(s) declare functions ({names:,} distinct "
            f"name{'s' if names != 1 else ''}); {tools['calls']:,} call(s) in "
            f"{tools['rows_with_calls']:,} row(s) (at most {calls['max']} per row), "
            f"{tools['results']:,} result(s), {tools['unanswered_calls']:,} unanswered, "
            f"{tools['open_calls']:,} left open at the end of a row")


def _label(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _labels(result: CheckResult) -> dict[str, int] | None:
    """Rows per label when most rows carry a ``label`` with few distinct values."""
    values = [e.meta["label"] for e in result.examples if e.meta.get("label") is not None]
    if not values or (result.format != "classification" and 2 * len(values) < result.accepted):
        return None
    counts = Counter(_label(v) for v in values)
    if len(counts) > MAX_LABELS:
        return None
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def profile_from_check(result: CheckResult) -> Profile:
    """The profile of a checked file.

    Args:
        result: what ``check_data`` returned for the file.

    Returns:
        Its profile.
    """
    roles: Counter = Counter()
    for e in result.examples:
        roles.update(m.role for m in e.messages)
    return Profile(
        source=result.source, format=result.format, rows_read=result.rows_read,
        accepted=result.accepted, rejected=result.rejected, errors=len(result.errors),
        warnings=len(result.warnings), finding_counts=result.counts(),
        token_lengths=result.token_lengths, max_length=result.max_length,
        turns=[len(e.messages) for e in result.examples], roles=dict(roles),
        columns=result.columns, labels=_labels(result),
        error_codes=sorted({f.code for f in result.errors}), notes=list(result.notes),
        tools=tool_counts(result))


def profile_data(path: str | Path, format: str = "auto", tokenizer: Any = None,
                 template: str | None = None,
                 max_length: int = DEFAULT_MAX_LENGTH) -> Profile:
    """Check a file (without the near-duplicate pass) and profile it.

    Args:
        path: a data file.
        format: one of ``FORMATS`` or ``"auto"``.
        tokenizer: a Hugging Face tokenizer for token lengths; ``None`` leaves them out.
        template: the chat template, as for ``resolve_chat_template``.
        max_length: the length limit drawn on the token-length plot.

    Returns:
        The profile.

    Raises:
        DataError: as ``check_data``.
    """
    result = check_data(path, format, tokenizer, template, max_length, near_duplicates=False)
    return profile_from_check(result)


def save_plots(profile: Profile, out_dir: str | Path) -> dict[str, Path]:
    """Draw the profile's plots as PNG files.

    Args:
        profile: the profile to draw.
        out_dir: the folder to write into (created if needed).

    Returns:
        Plot name -> PNG path, in display order: ``rows``, ``findings``,
        ``token_lengths``, ``turns``, ``fields``, ``labels``, ``tool_calls`` (those with
        data).

    Raises:
        DataError: a PNG cannot be written.
    """
    out = Path(out_dir)
    plots = {"rows": _rows_plot(profile)}
    if profile.finding_counts:
        plots["findings"] = _findings_plot(profile)
    if profile.token_lengths:
        plots["token_lengths"] = _lengths_plot(profile)
    if profile.turns and any(profile.turns):
        plots["turns"] = _turns_plot(profile)
    if profile.columns:
        plots["fields"] = _fields_plot(profile)
    if profile.labels:
        plots["labels"] = _labels_plot(profile)
    if profile.tools is not None and profile.tools["calls"]:
        plots["tool_calls"] = _calls_plot(profile.tools)
    return {name: save_png(figure, out / f"{name}.png", error=DataError)
            for name, figure in plots.items()}


def _whole(axis) -> None:
    """Ticks at whole numbers only: the axis counts rows or findings."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _count_bars(names: list[str], counts: list[int], colors: list[str], unit: str,
                title: str, height: float):
    """Horizontal bars of counts, each labelled with its number, first name on top."""
    figure, ax = new_figure(height=height)
    bars = ax.barh(names, counts, color=colors)
    ax.bar_label(bars, labels=[f"{n:,}" for n in counts], padding=3)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    _whole(ax.xaxis)
    ax.set_title(title)
    ax.margins(x=0.15)
    return figure


def _rows_plot(p: Profile):
    return _count_bars(["accepted", "rejected"], [p.accepted, p.rejected],
                       ["#3b7d3b", "#b23b3b"], "rows", f"Rows read: {p.rows_read:,}", 1.8)


def _findings_plot(p: Profile):
    counts = list(p.finding_counts.items())
    shown = counts[:_MAX_CODES]
    if len(counts) > _MAX_CODES:
        shown.append(("other", sum(n for _, n in counts[_MAX_CODES:])))
    colors = ["#b23b3b" if c in p.error_codes else "#c98a1b" for c, _ in shown]
    return _count_bars([c for c, _ in shown], [n for _, n in shown], colors, "findings",
                       f"Findings by code ({p.errors:,} errors in red, {p.warnings:,} warnings)",
                       0.9 + 0.3 * len(shown))


def _lengths_plot(p: Profile):
    lengths = p.token_lengths or []
    figure, ax = new_figure()
    low, high = min(lengths), max(lengths)
    step = max(1, -(-(high - low + 1) // 60))  # whole tokens per bin, at most 60 bins
    ax.hist(lengths, bins=range(low, high + step + 1, step), color="#3b62a8", align="left")
    if p.max_length <= 1.2 * max(lengths):  # else the line would squeeze the histogram
        ax.axvline(p.max_length, color="#b23b3b", linestyle="--",
                   label=f"max length {p.max_length}")
        ax.legend()
    over = sum(n > p.max_length for n in lengths)
    ax.set_xlabel("tokens per row (with the chat template)")
    ax.set_ylabel("rows")
    _whole(ax.yaxis)
    ax.set_title(f"Token lengths: median {length_stats(lengths)['median']}, "
                 f"max {max(lengths)}, {over:,} over the limit of {p.max_length}")
    return figure


def _turns_plot(p: Profile):
    counts = sorted(Counter(p.turns).items())
    figure, ax = new_figure(height=2.6)
    ax.bar([str(k) for k, _ in counts], [n for _, n in counts], color="#6a4fa3")
    ax.set_xlabel("messages per row")
    ax.set_ylabel("rows")
    _whole(ax.yaxis)
    roles = ", ".join(f"{r} {n:,}" for r, n in p.roles.items())
    ax.set_title(f"Turns per row ({roles})")
    return figure


def _fields_plot(p: Profile):
    names = list(p.columns)
    stats = [p.columns[n] for n in names]
    filled = [s["present"] - s["empty"] for s in stats]
    empty = [s["empty"] for s in stats]
    missing = [s["missing"] for s in stats]
    figure, ax = new_figure(height=0.9 + 0.35 * len(names))
    ax.barh(names, filled, color="#3b7d3b", label="filled")
    ax.barh(names, empty, left=filled, color="#c98a1b", label="empty")
    ax.barh(names, missing, left=[a + b for a, b in zip(filled, empty, strict=True)],
            color="#b23b3b", label="missing or null")
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    _whole(ax.xaxis)
    ax.set_title("Fields: filled, empty and missing")
    figure.legend(loc="outside lower center", ncols=3, fontsize="small")
    return figure


def _labels_plot(p: Profile):
    labels = p.labels or {}
    figure, ax = new_figure(height=0.9 + 0.3 * len(labels))
    bars = ax.barh(list(labels), list(labels.values()), color="#2f8f8f")
    total = sum(labels.values())
    ax.bar_label(bars, labels=[f"{n:,} ({n / total:.0%})" for n in labels.values()], padding=3)
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    _whole(ax.xaxis)
    ax.set_title(f"Labels ({len(labels)} classes)")
    ax.margins(x=0.2)
    return figure


def _calls_plot(tools: dict):
    counts = tools["calls_per_row"]["histogram"]
    figure, ax = new_figure(height=2.6)
    ax.bar([str(k) for k in counts], list(counts.values()), color="#a8553b")
    ax.set_xlabel("tool calls per row")
    ax.set_ylabel("rows")
    _whole(ax.yaxis)
    ax.set_title(f"Tool calls per row ({tools['calls']:,} calls, {tools['results']:,} results, "
                 f"{tools['unanswered_calls']:,} unanswered)")
    return figure
