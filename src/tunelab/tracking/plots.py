"""Matplotlib scaffolding for report plots: the figure size, the palette, PNG files.

Plots use matplotlib's object API (``Figure``), never pyplot: no global figure list and
no backend switch, so drawing is safe inside a server or a test; a ``Figure`` renders a
PNG with the Agg renderer on its own. PNGs are written atomically (``tunelab.files``),
so a report folder never holds half an image.

This module knows nothing of what is plotted: ``tunelab.gate.profile`` draws data
profiles and ``tunelab.eval.plots`` evaluations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import StoreError
from tunelab.files import WriteError, write_atomic

DPI = 100
WIDTH = 7.5  # inches: 750 px at DPI, the reports' column width
# The reports' colours: blue, green (good, accepted), amber (warnings), purple, teal,
# red (errors, rejected).
COLORS = ["#3b62a8", "#3b7d3b", "#c98a1b", "#6a4fa3", "#2f8f8f", "#b23b3b"]


def new_figure(height: float = 3.2, width: float = WIDTH) -> tuple[Any, Any]:
    """A figure with one axes, laid out by matplotlib's constrained layout.

    Args:
        height: inches.
        width: inches; the report's column width by default.

    Returns:
        ``(figure, axes)``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def save_png(fig: Any, path: str | Path, *, error: WriteError = StoreError) -> Path:
    """Write a figure as a PNG at ``DPI``, cropped to its content, atomically.

    Args:
        fig: a matplotlib ``Figure``.
        path: the PNG file; its folder is created if needed.
        error: the error class a failed write becomes (see ``tunelab.files``).

    Raises:
        StoreError | DataError: (as ``error``) the file cannot be written.
    """
    # format="png": the temporary file's name does not end in .png.
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI,
                                                      bbox_inches="tight"), error=error)
