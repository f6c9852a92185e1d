"""Learning curves: the slices of training data, the verdict, and the report.

`tunelab data curve` trains one run per slice of the training rows (fractions of them,
nested: a smaller slice is a subset of a larger one) and scores each. This module holds
what does not train: parsing and checking the fractions, turning them into row counts,
judging the last step of the curve (the change of the metric per doubling of rows),
and writing the report folder (``index.html``, two PNG plots, ``curve.json``).

The verdict's thresholds are ``RULES``, one per metric, and nowhere else. This module
knows nothing of models, training or the command line; ``tunelab.recipes.curve`` runs
the slices.
"""

from __future__ import annotations

import html
import math
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelab.errors import StoreError, UsageError
from tunelab.files import write_json_atomic, write_text_atomic
from tunelab.tracking.html import figure, page, table
from tunelab.tracking.plots import COLORS, new_figure, save_png

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # of the training rows: four points, up to all


@dataclass(frozen=True)
class MetricRule:
    """How a curve's metric is judged.

    Args:
        lower_is_better: errors and losses fall as a model improves.
        min_gain: the least improvement per doubling of rows that counts as "more data
            still helps"; below it the curve has flattened.
        relative: ``min_gain`` is a share of the metric at the smaller slice (losses and
            errors, whose scale depends on the data), not an absolute amount.
    """

    lower_is_better: bool
    min_gain: float
    relative: bool = False


# The thresholds of the verdict, by metric: one point of accuracy or exact match per
# doubling of rows; 2% less error or validation loss per doubling.
RULES: dict[str, MetricRule] = {
    "accuracy": MetricRule(lower_is_better=False, min_gain=0.01),
    "exact_match": MetricRule(lower_is_better=False, min_gain=0.01),
    "mae": MetricRule(lower_is_better=True, min_gain=0.02, relative=True),
    "loss": MetricRule(lower_is_better=True, min_gain=0.02, relative=True),
}


def parse_fractions(text: str | Sequence[float]) -> list[float]:
    """``"0.1,0.25,0.5,1"`` (or a list) as sorted, distinct fractions of the training rows.

    Raises:
        UsageError: a part is not a number, a fraction is outside (0, 1], or fewer than
            two distinct fractions are given (one point is not a curve).
    """
    parts: list[str | float] = [p.strip() for p in text.split(",")] if isinstance(text, str) \
        else list(text)
    hint = "e.g. --fractions 0.1,0.25,0.5,1 (shares of the training rows, the largest 1 for all)"
    try:
        values = [float(p) for p in parts if p != ""]
    except (TypeError, ValueError):
        raise UsageError(f"--fractions {text!r}: every fraction must be a number", hint=hint) from None
    bad = [v for v in values if not math.isfinite(v) or not 0 < v <= 1]
    if bad:
        raise UsageError(f"--fractions {text!r}: {', '.join(f'{v:g}' for v in bad)} "
                         "outside (0, 1]; a fraction is a share of the training rows", hint=hint)
    fractions = sorted(set(values))
    if len(fractions) < 2:
        raise UsageError(f"--fractions {text!r}: a curve needs two or more distinct fractions",
                         hint=hint)
    return fractions


@dataclass(frozen=True)
class Slice:
    """One point of the curve: a fraction and the training rows it stands for."""

    fraction: float
    rows: int


def slices(fractions: Sequence[float], total_rows: int) -> tuple[list[Slice], list[str]]:
    """Row counts of the fractions of ``total_rows`` (rounded), smallest first.

    Fractions that round to the same count are trained once (the first is kept).

    Returns:
        ``(slices, notes)``; a note says which fractions were merged.

    Raises:
        UsageError: a fraction rounds to no row, or fewer than two slices remain.
    """
    if total_rows < 2:
        raise UsageError(f"the config yields {total_rows} training row(s): too few for a curve",
                         hint="a curve trains on growing slices of the rows; give more data")
    out: list[Slice] = []
    notes: list[str] = []
    for f in sorted(fractions):
        rows = round(f * total_rows)
        if rows < 1:
            raise UsageError(f"--fractions: {f:g} of {total_rows:,} training rows is no row",
                             hint=f"use fractions of at least {1 / total_rows:.2g}")
        if out and out[-1].rows == rows:
            notes.append(f"fractions {out[-1].fraction:g} and {f:g} both give {rows:,} rows; "
                         "that slice is trained once")
            continue
        out.append(Slice(f, rows))
    if len(out) < 2:
        raise UsageError(f"--fractions: every fraction gives {out[0].rows:,} rows of "
                         f"{total_rows:,}: one point is not a curve",
                         hint="spread the fractions further apart, e.g. 0.1,0.25,0.5,1")
    return out, notes


@dataclass
class Verdict:
    """The last step of a curve, judged.

    Args:
        helps: True when more rows still improve the metric enough; None when it
            cannot be judged (a slice has no value).
        per_doubling: the change of the metric per doubling of rows between the two
            largest slices (signed as the metric moves: a falling loss is negative).
        threshold: the least improvement per doubling that counts (``RULES``).
        text: the verdict in one line.
    """

    helps: bool | None
    per_doubling: float | None
    threshold: float | None
    text: str


def verdict(rows: Sequence[int], values: Sequence[float | None], metric: str) -> Verdict:
    """Judge the step between the two largest slices.

    Args:
        rows: training rows per slice, ascending.
        values: the metric per slice (None where it could not be measured).
        metric: a key of ``RULES``.
    """
    rule = RULES[metric]
    if len(rows) < 2 or values[-1] is None or values[-2] is None:
        return Verdict(None, None, None, "no verdict: the two largest slices need a "
                       f"{metric} value each")
    (r1, r2), (v1, v2) = rows[-2:], (float(values[-2]), float(values[-1]))
    per_doubling = (v2 - v1) / math.log2(r2 / r1)
    gain = -per_doubling if rule.lower_is_better else per_doubling
    threshold = rule.min_gain * abs(v1) if rule.relative else rule.min_gain
    direction = "lower" if rule.lower_is_better else "higher"
    change = (f"{per_doubling:+.4f} {metric} per doubling of rows at the largest slice "
              f"({r1:,} -> {r2:,} rows; {direction} is better)")
    if gain >= threshold:
        return Verdict(True, per_doubling, threshold, f"more data still helps: {change}")
    return Verdict(False, per_doubling, threshold,
                   f"the curve has flattened: {change}; more rows would mostly cost time")


@dataclass
class CurvePoint:
    """One finished slice: its run and its numbers.

    ``value`` is the curve's metric; the loss and token accuracy are of the validation
    rows at the weights the run kept (None without validation rows). Seconds: the
    optimizer steps (``train_seconds``) and the whole run with loading and saving
    (``wall_seconds``), both from the run's ``summary.json``; the slice with scoring
    (``slice_seconds``) and the scoring alone (``eval_seconds``).
    """

    fraction: float
    rows: int  # the slice: data.train_rows of its run
    trained_rows: int  # after the length policy (rows over max_length may be dropped)
    run: str
    steps: int
    epochs: float
    train_tokens: int
    train_seconds: float
    wall_seconds: float
    slice_seconds: float
    eval_seconds: float
    val_loss: float | None
    val_token_accuracy: float | None
    final_val_loss: float | None
    best_val_loss: float | None
    value: float | None
    eval_metrics: dict = field(default_factory=dict)


@dataclass
class Curve:
    """A learning curve as ``curve.json`` holds it."""

    name: str  # the curve's folder name, the report's title
    runs: str  # the folder of the slices' runs
    metric: str
    lower_is_better: bool
    total_rows: int
    evaluated_on: str  # where the metric comes from (the eval data, or the validation loss)
    eval_rows: int | None
    training: str  # how each slice trains (epochs, or a fixed number of steps)
    points: list[CurvePoint]
    verdict: Verdict
    notes: list[str] = field(default_factory=list)
    stopped: bool = False  # a signal stopped a slice; the points are the finished ones

    def as_json(self) -> dict:
        return asdict(self)


_COLUMNS = ("fraction", "rows", "steps", "train min", "slice min", "val loss", "val token acc")


def _num(value: float | None, places: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{places}f}"


def _cells(p: CurvePoint, metric: str) -> list[str]:
    """A slice's table cells: minutes to 2 places, losses and metrics to 4."""
    cells = [f"{p.fraction:g}", f"{p.rows:,}", f"{p.steps:,}", _num(p.train_seconds / 60, 2),
             _num(p.slice_seconds / 60, 2), _num(p.val_loss), _num(p.val_token_accuracy)]
    return cells + ([_num(p.value)] if metric != "loss" else [])


def _header(metric: str) -> list[str]:
    return [*_COLUMNS, *([metric] if metric != "loss" else [])]


def format_table(curve: Curve) -> str:
    """The slices as an aligned text table, one line per slice."""
    header = _header(curve.metric)
    body = [_cells(p, curve.metric) for p in curve.points]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def _plot(out: Path, curve: Curve, x: list[float], xlabel: str, log_x: bool, src: str,
          title: str, name: str) -> str:
    pts = [(xi, p) for xi, p in zip(x, curve.points, strict=True) if p.value is not None]
    fig, ax = new_figure(height=3.4)
    if pts:
        xs, ys = [a for a, _ in pts], [p.value for _, p in pts]
        ax.plot(xs, ys, marker="o", color=COLORS[0])
        for xi, p in pts:  # the rows axis names the rows; the minutes axis does not
            label = f"{p.value:.4g}" if log_x else f"{p.rows:,} rows"
            ax.annotate(label, (xi, p.value), textcoords="offset points", xytext=(4, 6),
                        fontsize=8, color="#555")
        if log_x:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{v:,.0f}" for v in xs])
            ax.minorticks_off()
    ax.set_xlabel(xlabel)
    better = "lower" if curve.lower_is_better else "higher"
    ax.set_ylabel(f"{curve.metric} ({better} is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    save_png(fig, out / src, error=StoreError)
    return figure(src, title, name)


def write_curve_report(out_dir: str | Path, curve: Curve) -> Path:
    """Write ``index.html``, ``plots/*.png`` and ``curve.json`` into ``out_dir``.

    Returns:
        The path of ``index.html``.

    Raises:
        StoreError: a file of the report cannot be written.
    """
    out = Path(out_dir)
    rows = [float(p.rows) for p in curve.points]
    minutes = [p.train_seconds / 60 for p in curve.points]
    plots = [
        _plot(out, curve, rows, "training rows (log scale)", True, "plots/metric_by_rows.png",
              f"{curve.metric} against training rows", "rows"),
        _plot(out, curve, minutes, "training minutes", False, "plots/metric_by_minutes.png",
              f"{curve.metric} against training minutes", "minutes"),
    ]
    v = curve.verdict
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in curve.notes)
    stopped = ("<p class='warning'>stopped by a signal: the curve holds the slices that "
               "finished.</p>" if curve.stopped else "")
    sections = [
        f"<h1>Learning curve: {html.escape(curve.name)}</h1>",
        f"<p><b>{html.escape(v.text)}</b></p>{stopped}",
        f"<p>{len(curve.points)} slice(s) of {curve.total_rows:,} training rows, nested (a "
        f"smaller slice is part of every larger one). Metric: <b>{html.escape(curve.metric)}"
        f"</b>, {html.escape(curve.evaluated_on)}. Training: {html.escape(curve.training)}. "
        f"The runs are in <code>{html.escape(curve.runs)}</code> (<code>tunelab runs list "
        f"--dir {html.escape(shlex.quote(curve.runs))}</code>).</p>",
        table(["run", *_header(curve.metric)],
              [[Path(p.run).name, *_cells(p, curve.metric)] for p in curve.points]),
        *plots,
        f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "",
    ]
    index = write_text_atomic(out / "index.html",
                              page(f"tunelab learning curve: {curve.name}", sections),
                              error=StoreError)
    write_json_atomic(out / "curve.json", curve.as_json(), error=StoreError)
    return index
