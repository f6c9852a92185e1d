"""Turn pydantic validation errors into the config problems a user reads.

Every config schema (the run config, the evaluation settings) reports through this one
function, so every message has the same shape: the dotted path, what is wrong, and the
value that was given. It knows nothing of YAML files or of the schemas themselves.
"""

from __future__ import annotations

from pydantic import ValidationError


def validation_problems(err: ValidationError) -> list[str]:
    """Each pydantic error as ``dotted.path: what is wrong (given: value)``."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        if e["type"] == "missing":
            problems.append(f"{loc}: required but missing")
            continue
        given = e.get("input")
        problems.append(f"{loc}: {msg} (given: {given!r})")
    return problems
