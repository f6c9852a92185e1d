"""How work below the CLI tells a person what is happening, without printing.

The output policy (README, "Contributing"): results go to stdout, progress, warnings and
hints to stderr, server logs through ``logging``; and only ``tunelab.cli`` writes any of
them. Every lower layer that has something to say takes a ``Reporter`` argument and
calls it; whoever runs the work decides where it goes. The CLI passes one that writes
to stderr (``tunelab.cli.reporter``); a library caller, a server or a test gets
``SILENT`` by default, so the same code runs quietly there.

This module knows nothing of terminals, tqdm or the CLI: it defines the calls and the
silent implementation only.
"""

from __future__ import annotations

from typing import Any


class Progress:
    """A progress bar's handle, as returned by ``Reporter.bar``; this one shows nothing.

    The calls are tqdm's, so a tqdm bar is a valid implementation.
    """

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""

    def set_postfix(self, **values: Any) -> None:
        """Show ``values`` (e.g. the loss) beside the bar."""

    def close(self) -> None:
        """The phase ended (also on error)."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reporter:
    """Receives what a person running the work should see; this base shows nothing.

    ``info`` is for progress lines and hints ("run folder: runs/x"), ``warning`` for
    something that is probably a mistake but does not stop the work (rule 6 of the
    conventions: silence, info, warning or error), ``bar`` for a phase with a count.
    """

    def info(self, message: str) -> None:
        """A line of progress or a hint."""

    def warning(self, message: str) -> None:
        """A line about something that is probably a mistake; the work goes on."""

    def bar(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Progress:
        """A progress bar for one phase of ``total`` units (None: unknown), ``initial`` done."""
        return Progress()


SILENT = Reporter()
"""The reporter of library calls, servers and tests: says nothing."""


class WithoutBars(Reporter):
    """Passes lines and warnings on to ``inner`` and draws no bars (a search's trials).

    Holds only ``inner``, so it pickles when ``inner`` does.
    """

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner

    def info(self, message: str) -> None:
        self.inner.info(message)

    def warning(self, message: str) -> None:
        self.inner.warning(message)


class Recorder(Reporter):
    """Keeps every line it is told, in order (tests; a server that returns them)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.lines.append(f"warning: {message}")
