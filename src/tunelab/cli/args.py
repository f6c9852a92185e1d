"""argparse helpers of the command modules: checked argument types, the help of a group.

Numeric options take a type from here, so a value out of range is refused while the
command line is parsed, before a model loads, with argparse's message (``argument
--max-new-tokens: must be a whole number >= 1 (given: '0')``) and exit code 2. This
module knows nothing of particular commands.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from tunelab.cli import exits
from tunelab.errors import TunelabError


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {what} (given: {text!r})") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (given: {text!r})")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (counts of tokens, rows, processes)."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 (given: {text!r})")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (seeds; counts where 0 means none)."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (given: {text!r})")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a sampling temperature, where 0 means greedy)."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (given: {text!r})")
    return value


def port(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port)."""
    value = int(_number(text, int))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535 (given: {text!r})")
    return value


def similarity(text: str) -> float:
    """A similarity threshold in (0, 1] (Jaccard or cosine)."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1 (given: {text!r})")
    return value


def rate(text: str) -> float:
    """A rate strictly between 0 and 1 (a share of words to change)."""
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and below 1 (given: {text!r})")
    return value


def checked_by(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argument type from a parser of the data layer that raises ``TunelabError``.

    The value is then refused while the command line is parsed (exit 2), like any other
    bad option, instead of after the command started.
    """
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except TunelabError as e:
            raise argparse.ArgumentTypeError(f"{e.message} ({e.hint})" if e.hint else e.message) from None

    convert.__name__ = parse.__name__  # argparse names the type in "invalid <name> value"
    return convert


def show_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The ``func`` of a command group: a bare ``tunelab data`` prints its help, exit 0."""
    def show(_: argparse.Namespace) -> int:
        parser.print_help()
        return exits.OK

    return show


_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since_time(text: str, now: datetime | None = None) -> datetime:
    """``--since``: ``30m``, ``24h``, ``7d``, ``2w`` ago, or an ISO date or time (UTC when it
    names no zone). One reader for every command that reads the request log.

    Raises:
        argparse.ArgumentTypeError: neither form, or a time in the future.
    """
    now = now or datetime.now(timezone.utc)
    m = _AGO.match(text)
    if m:
        try:
            return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
        except (OverflowError, ValueError):  # a span before year 1
            raise argparse.ArgumentTypeError(f"reaches back before year 1 (given: {text!r})") from None
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a span ago (30m, 24h, 7d, 2w) or an ISO date or time such as "
            f"2026-01-31 or 2026-01-31T08:00 (given: {text!r})") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    if t >= now:
        raise argparse.ArgumentTypeError(f"is not in the past (given: {text!r})")
    return t
