"""The CLI's reporter: what lower layers report, written to stderr.

Results are the commands' business (stdout, printed by each command); everything a
``Reporter`` is told is progress, a warning or a hint, so it goes to stderr, where it
never mixes with a result a script reads from stdout.

Progress bars are drawn by tqdm, but the time left is ours (``SteadyEta``): tqdm's own
estimate divides by a smoothed rate that starts with the first step, which carries
one-time costs, so a 10-minute run showed an ETA of 54 min to 3 h at step 1 (issue 13).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tunelab.tracking.reporter import Progress, Reporter

WARMUP_UPDATES = 2
"""Updates of a bar left out of its ETA: they may carry one-time costs, not the steady pace.

Measured (smollm2-135m-instruct, LoRA, CPU, 2 shared cores): tqdm's clock, started before
the start validation, saw 54 s for step 1 (43 s of it validation) and showed ETA 17 min
at step 1 and 6 min at step 3 for about 3.5 min left. With validation a phase of its own,
step 1 took 7.1 s against 6.3-7.8 s for steps 2-5: on a CPU the first step is barely
slower, but on a GPU it also pays CUDA initialisation, kernel selection and allocator
growth (not measured here: no GPU). Two updates cost only an ETA that appears at step 3;
a share of the time (say the first 10%) would need the total time, which is what we
estimate."""

STEADY_WINDOW = 25
"""The most recent steady updates the ETA takes the median of: recent, so it follows a
machine that gets busier or freer; a median, so a step that also validated or saved a
checkpoint does not move it."""

BURST_SECONDS = 0.05
"""Updates closer together than this are one update: a batch of generations finishes
together, and 15 of its 16 completions arriving 0 s apart made the median pace 0, so the
evaluation showed "ETA 00:00 (90900.8 prompt/s)" with a minute left."""

_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
_COUNT_FORMAT = "{desc}: {n_fmt} {unit} [{elapsed}{postfix}]"  # no total: no bar, no ETA


class SteadyEta:
    """Time left from the steady pace: the median duration of recent updates after warm-up.

    Args:
        total: units of the whole phase (None: unknown, so no ETA).
        initial: units already done (a resumed run); not timed.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, total: int | None, initial: int = 0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self.n = initial
        self.clock = clock
        self.updates = 0
        self.last = clock()
        self.steady: deque[tuple[float, int]] = deque(maxlen=STEADY_WINDOW)  # (seconds, units)
        self._sampled = False  # whether the last update opened a steady sample

    def update(self, n: int = 1) -> None:
        """``n`` more units are done now."""
        if n <= 0:
            return
        now = self.clock()
        gap = now - self.last
        if self.updates and gap < BURST_SECONDS:  # the same burst: one update
            if self._sampled:
                seconds, units = self.steady[-1]
                self.steady[-1] = (seconds + gap, units + n)
        else:
            self.updates += 1
            self._sampled = self.updates > WARMUP_UPDATES
            if self._sampled:
                self.steady.append((gap, n))
        self.last = now
        self.n += n

    def seconds_per_unit(self) -> float | None:
        """The steady pace, or None while still warming up."""
        return statistics.median(s / u for s, u in self.steady) if self.steady else None

    def remaining(self) -> float | None:
        """Seconds left, or None while warming up or when the total is unknown."""
        pace = self.seconds_per_unit()
        if pace is None or self.total is None:
            return None
        return max(self.total - self.n, 0) * pace

    def text(self, unit: str) -> str:
        """``ETA 01:35 (0.95 s/step)``, ``ETA estimating...``, or the pace alone (done, no total)."""
        pace = self.seconds_per_unit()
        if pace is None:
            return "ETA estimating..." if self.total is not None else ""
        rate = f"{pace:.2f} s/{unit}" if pace >= 1 else f"{1 / max(pace, 1e-9):.1f} {unit}/s"
        left = self.remaining()
        return rate if not left else f"ETA {_clock(left)} ({rate})"  # done: the pace it ran at


class EtaBar:
    """A progress bar drawn by tqdm with ``SteadyEta``'s time left in place of tqdm's.

    The calls are those of ``tunelab.tracking.reporter.Progress``. A bar opened while
    another is open (a validation during training) is drawn below it and removed when
    it closes (tqdm's ``leave=None``).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0,
                 file: Any = None, clock: Callable[[], float] = time.perf_counter) -> None:
        from tqdm.auto import tqdm

        self.unit = unit
        self.eta = SteadyEta(total, initial, clock)
        self.values: dict[str, Any] = {}
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=None,
                        file=file or sys.stderr,
                        bar_format=_BAR_FORMAT if total is not None else _COUNT_FORMAT)
        self._show(refresh=False)

    def update(self, n: int = 1) -> None:
        self.eta.update(n)
        self._show(refresh=False)  # tqdm.update redraws (at most every 0.1 s)
        self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        self.values = values
        self._show(refresh=True)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> EtaBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _show(self, refresh: bool) -> None:
        parts = [self.eta.text(self.unit)] + [f"{k}={v}" for k, v in self.values.items()]
        self.bar.set_postfix_str(", ".join(p for p in parts if p), refresh=refresh)


class StderrReporter(Reporter):
    """Lines to stderr; progress bars (``EtaBar``) unless ``bars`` is false (``--no-progress``).

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
        return EtaBar(total=total, initial=initial, desc=desc, unit=unit)


@contextmanager
def library_bars(shown: bool) -> Iterator[None]:
    """Let transformers draw its own bars (loading weights) only when ours are shown.

    ``--no-progress`` means no bars at all; the setting is restored afterwards, so a
    caller of ``main`` in the same process (a test) keeps its own.
    """
    if shown:
        yield
        return
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _write(message: str) -> None:
    # tqdm.write keeps an open bar intact below the line; plain print would tear it.
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()
