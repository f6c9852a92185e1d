"""The shell of tunelab's HTML reports: the page, its style, tables and figures.

A report page is static: no scripts, no network, and every value escaped (``escape``)
unless it is markup built from fixed strings. Plots are ``<figure>`` elements linking a
PNG by relative path, so a report folder can be moved or zipped whole.

This module knows nothing of what a report says: ``tunelab.gate.report`` (data
profiles) and ``tunelab.eval.report`` (evaluations) write the sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TypeGuard

# One style for every report; ``error``/``bad`` mark failures, ``warning`` doubts,
# ``ok`` a clean result.
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.error, .bad { color: #b23b3b; font-weight: 600; } .warning { color: #9a6a10; }
.ok { color: #3b7d3b; font-weight: 600; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
"""


def page(title: str, sections: Sequence[str], style: str = STYLE) -> str:
    """A whole HTML document: ``title`` (escaped here) and the sections, one per line.

    Args:
        title: the window title, plain text.
        sections: markup, already escaped by whoever built it.
        style: the CSS; ``STYLE`` unless a page has its own layout.
    """
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def cell_text(value: object) -> str:
    """A value as a report shows it: floats to 4 places, ints with thousands separators."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def num_cell(value: int | float) -> str:
    """A right-aligned table cell for a number."""
    return f"<td class='num'>{escape(cell_text(value))}</td>"


def table(header: Sequence[str], rows: Sequence[Sequence[object]],
          raw_col: int | None = None) -> str:
    """A table with a header row; numbers right-aligned, every cell escaped.

    Args:
        header: the column titles, plain text.
        rows: the cells; numbers are shown with ``cell_text``.
        raw_col: a column that holds markup built from fixed strings, not escaped.
    """
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            if i == raw_col:
                cells.append(f"<td>{value}</td>")
            elif _is_number(value):
                cells.append(num_cell(value))
            else:
                cells.append(f"<td>{escape(cell_text(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def figure(src: str, title: str, name: str) -> str:
    """A plot: the PNG at relative path ``src``, captioned ``title``, tagged ``data-plot``."""
    return (f"<figure><img src='{escape(src)}' alt='{escape(title)}' "
            f"data-plot='{escape(name)}'><figcaption>{escape(title)}</figcaption></figure>")
