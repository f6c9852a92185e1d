"""The `tunelab` parser as data for CLI tests: every command, and hinted commands parsed.

``commands()`` walks the parser tree, so a new command or option is covered by the tests
that use it without being listed anywhere. ``parse_problem`` runs a command line that
tunelab prints as a hint through the real parser.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex

from tunelab.cli.main import build_parser, parse_args

# A hinted command inside backticks or <code>: `tunelab models pull NAME`.
HINTED = re.compile(r"`(tunelab [^`]+)`|<code>(tunelab [^<]+)</code>")
# Placeholders a hint may hold (NAME, FILE, N, an f-string field) and what a user types.
_UPPER = re.compile(r"^[A-Z][A-Z_]*$")
_FIELD = re.compile(r"\{[^}]*\}")
_FILL = {"N": "2"}


def commands(parser: argparse.ArgumentParser | None = None,
             path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command path (``("data", "check")``) with its parser, groups included."""
    parser = parser or build_parser()
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*path, name))
    return found


def is_group(parser: argparse.ArgumentParser) -> bool:
    """Whether the parser only chooses a sub-command (``tunelab data``)."""
    return any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def hinted_commands(text: str) -> list[str]:
    """The ``tunelab ...`` command lines quoted in ``text``."""
    return [a or b for a, b in HINTED.findall(text)]


def parse_problem(command: str) -> str | None:
    """Why a hinted command line does not parse (None: it does).

    A placeholder (``NAME``, ``{path}``) is filled as a user would fill it. A hint with
    placeholders must parse completely; one without (`tunelab data clean`) names a
    command, and may leave its required inputs for the user to add.
    """
    has_placeholder = bool(_FIELD.search(command))
    words = shlex.split(_FIELD.sub("x", command))
    has_placeholder |= any(_UPPER.match(w) for w in words)
    argv = [_FILL.get(w, "x") if _UPPER.match(w) else w for w in words[1:]]
    err = io.StringIO()
    parser = build_parser()
    with contextlib.redirect_stderr(err):
        try:
            parse_args(parser, argv)
        except SystemExit as e:
            if e.code == 0:
                return None
            text = err.getvalue().strip().splitlines()[-1]
            if not has_placeholder and "the following arguments are required" in text:
                return None
            return f"{command!r} does not parse: {text}"
    return None

