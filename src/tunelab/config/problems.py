"""Turn pydantic validation errors into the config problems a user reads.

Every config schema (the run config, the evaluation settings) reports through
``validation_problems``, so every message has the same shape: the dotted path, what is
wrong, and the value that was given; an unknown key gets the closest valid key
(``did you mean 'learning_rate'?``). It knows nothing of YAML files or of the schemas
themselves: the schema is an argument.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


def validation_problems(err: ValidationError, model: type[BaseModel]) -> list[str]:
    """One ``path: what is wrong (given: value)`` line per pydantic error of ``model``."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = unknown_key_message(model, e["loc"])
        if e["type"] == "missing":
            problems.append(f"{loc}: required but missing")
            continue
        given = e.get("input")
        problems.append(f"{loc}: {msg} (given: {given!r})")
    return problems


def _unwrap(annotation: Any) -> Any:
    """The part of ``X | None`` (or another union) that can hold keys: a model, list or dict."""
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            if get_origin(arg) in (list, dict) or (isinstance(arg, type) and issubclass(arg, BaseModel)):
                return arg
    return annotation


def _keys_at(model: type[BaseModel], section: Sequence[str | int]) -> list[str] | None:
    """The valid keys of the section at ``section`` (a pydantic error location), if any."""
    node: Any = model
    for part in section:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return None
            node = field.annotation
        elif get_origin(node) is list:
            node = get_args(node)[0]  # part is an item's index
        elif get_origin(node) is dict:
            node = get_args(node)[1]  # part is the item's key
        else:
            return None
    node = _unwrap(node)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else None


def key_suggestion(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    """The closest valid key to the unknown one at ``loc``, or all keys of its section.

    Args:
        model: the schema the location is relative to (``RunConfig``, a section class).
        loc: the location of the unknown key, e.g. ``("train", "learnig_rate")``.

    Returns:
        ``did you mean 'learning_rate'?``, else ``valid keys here: ...``, else (a
        section whose keys are free) ``check the spelling``.
    """
    keys = _keys_at(model, loc[:-1])
    if not keys:
        return "check the spelling"
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid keys here: {', '.join(keys)}"


def unknown_key_message(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    """``unknown key (did you mean 'x'?)`` for the unknown key at ``loc`` of ``model``."""
    return f"unknown key ({key_suggestion(model, loc)})"
