"""Proofreading of the text tunelab shows: no doubled words, no "a alpaca" in any string.

Every string literal of the package is read (f-strings with ``{...}`` for their fields,
and literals joined with ``+``), since messages are often built from several pieces.
Messages whose words come from variables are tested where they are built.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tunelab

SRC = Path(tunelab.__file__).parent
DOUBLED = re.compile(r"\b([a-z]+)\s+\1\b", re.IGNORECASE)
# "a" before a vowel sound, "an" before a consonant sound; "u" and "h" words go either
# way ("a user", "an hour"), so only the clear cases are checked.
A_VOWEL = re.compile(r"\b[Aa] (?!one|once)([aeio][a-z]*)\b")
AN_CONSONANT = re.compile(r"\b[Aa]n ([bcdgjklmnpqrstvwxyz][a-z]*)\b")
# Exact phrases that look wrong and are right: a flag and its value, a number format.
ALLOWED = {"label label", "name name", "an fp32"}


def _text(node: ast.AST) -> str | None:
    """The text of a string literal, an f-string (fields as ``{}``) or a ``+`` of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return None if left is None or right is None else left + right
    return None


def _slips(text: str) -> list[str]:
    found = [m.group(0) for pattern in (DOUBLED, A_VOWEL, AN_CONSONANT)
             for m in pattern.finditer(text)]
    return [slip for slip in found if slip.lower() not in ALLOWED]


def test_no_string_of_the_package_has_a_doubled_word_or_a_wrong_article():
    slips = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = _text(node)
            if text is not None:
                slips += [f"{path.relative_to(SRC)}:{node.lineno}: {slip!r}"
                          for slip in _slips(text)]
    assert slips == []


def test_the_checks_catch_the_slips_they_are_for():
    assert _slips("Unterminated string starting at at column 3") == ["at at"]
    assert _slips("a alpaca row looks like") == ["a alpaca"]
    assert _slips("an chat row; a user; an hour; a one-off; an exact duplicate") == ["an chat"]
    assert _slips("the the") == ["the the"]
