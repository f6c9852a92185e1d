"""The CLI's reporter: what lower layers report, written to stderr.

Results are the commands' business (stdout, printed by each command); everything a
``Reporter`` is told is progress, a warning or a hint, so it goes to stderr, where it
never mixes with a result a script reads from stdout.
"""

from __future__ import annotations

import sys
from typing import Any

from tunelab.tracking.reporter import Progress, Reporter


class StderrReporter(Reporter):
    """Lines to stderr; progress bars (tqdm) unless ``bars`` is false (``--no-progress``).

    It holds no open bar or stream, so it pickles (``tunelab tune`` hands it to workers).
    """

    def __init__(self, bars: bool = True) -> None:
        self.bars = bars

    def info(self, message: str) -> None:
        _write(message)

    def warning(self, message: str) -> None:
        _write(f"warning: {message}")

    def bar(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Any:
        if not self.bars:
            return Progress()
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr)


def _write(message: str) -> None:
    # tqdm.write keeps an open bar intact below the line; plain print would tear it.
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()
