"""What a benchmark needs beyond the standard library, checked before any work starts.

A missing package ends the script with one line naming the install command, instead of
a ``ModuleNotFoundError`` traceback (for TRL, minutes into a run, from a child process).
Only ``find_spec`` is called: nothing is imported here, so the check costs nothing.
"""

from __future__ import annotations

import importlib.util
import sys

CORE = 'pip install -e .  (or: make install)'
BENCH = 'pip install -e ".[bench]"  (or: make bench)'  # the bench extra: trl, datasets


def require(modules: list[str], install: str) -> None:
    """Exit with one line naming ``install`` when any top-level module is not importable."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"error: {sys.argv[0]} needs {', '.join(missing)} (not installed); run {install}")
