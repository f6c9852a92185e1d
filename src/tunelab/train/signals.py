"""Graceful stop: the first SIGINT/SIGTERM asks training to stop after the current step.

The handler only sets a flag; the loop polls it after each optimizer step, writes a
complete checkpoint and returns. A second signal stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StopFlag:
    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def __call__(self) -> bool:
        return self.requested


@contextmanager
def graceful_stop(notify: Callable[[str], None] | None = None) -> Iterator[StopFlag]:
    """Install the handlers for the duration of training (main thread only).

    Args:
        notify: told, on the first signal, what happens next (the CLI shows it).
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals only reach the main thread; nothing to install
        return

    def handler(signum, frame):  # noqa: ARG001 - signal API
        if flag.requested:
            raise KeyboardInterrupt  # second signal: stop now
        flag.requested = True
        flag.signal_name = signal.Signals(signum).name
        if notify is not None:
            notify(f"{flag.signal_name}: finishing this step and saving a checkpoint "
                   "(send it again to stop at once)")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
