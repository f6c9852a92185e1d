"""Read a YAML file for a config, with errors that name the file, line and column.

The run config and the evaluation config are read through ``read_yaml``, so a typo in
either is reported the same way (``run.yaml:12:5: not valid YAML: ...``), never as
``in "<unicode string>"``. It knows nothing of what the YAML should hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import ConfigError


def _yaml_problem(path: Path, e: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN: not valid YAML: what (while ... at line L, column C)``."""
    mark = getattr(e, "problem_mark", None)
    if mark is None:
        return f"{path}: not valid YAML: {e}"
    text = f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {e.problem}"
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None:
        text += f" ({context} at line {start.line + 1}, column {start.column + 1})"
    elif context:
        text += f" ({context})"
    return text


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The parsed YAML of ``path``.

    Raises:
        ConfigError: the file is missing, or not YAML (with its line and column).
    """
    p = Path(path)
    if not p.is_file():
        where = "" if p.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise ConfigError([f"{what} {str(p)!r} does not exist{where}"])
    try:
        with p.open(encoding="utf-8") as f:  # a stream, so a YAML error can name the file
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(p, e)], str(p)) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{p}: not UTF-8 text ({e.reason} at byte {e.start})"], str(p)) from None
