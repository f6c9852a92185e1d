"""Read a run config from YAML, apply dotted overrides, validate, report all problems.

``load_config("run.yaml", ["train.learning_rate=1e-4"])`` returns a ``RunConfig`` or
raises one ``ConfigError`` listing every problem with its dotted path and the value
given. Relative data paths are resolved against the config file's folder, so a config
works from any working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunelab.config.compose import cross_section_problems, resolve_phase_paths
from tunelab.config.problems import validation_problems
from tunelab.config.schema import RunConfig
from tunelab.errors import ConfigError
from tunelab.files import read_yaml_mapping


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-typed value.

    Raises:
        ConfigError: the override has no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise ConfigError([f"override {text!r}: expected KEY.PATH=VALUE, e.g. train.learning_rate=1e-4"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the literal text, validation will judge it
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each dotted override in a nested dict (creating sections as needed)."""
    problems = []
    for text in overrides:
        try:
            path, value = parse_override(text)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"override {text!r}: {part} is not a section")
                break
            node = child
        else:
            node[path[-1]] = value
    if problems:
        raise ConfigError(problems)
    return data


def _resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    for src in [*cfg.data.train, *cfg.data.validation]:
        p = Path(src.path).expanduser()
        if not p.is_absolute():
            src.path = str((base / p).resolve())
    out = Path(cfg.output.dir).expanduser()
    if not out.is_absolute():
        cfg.output.dir = str((Path.cwd() / out).resolve())
    return cfg


def config_from_dict(data: dict, overrides: list[str] | None = None, source: str | None = None,
                     base_dir: Path | None = None) -> RunConfig:
    """Validate a config dict (after overrides).

    Args:
        data: the parsed YAML.
        overrides: ``a.b=value`` strings applied before validation.
        source: the file name, for messages.
        base_dir: the folder relative data paths are resolved against (default: cwd).

    Raises:
        ConfigError: every problem found, each with its dotted path and the value given.
    """
    data = apply_overrides(dict(data), overrides or [])
    problems: list[str] = []
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        problems = validation_problems(e)
    # Search paths and phase overrides are checked against the schema too, in the same report.
    problems += cross_section_problems(data)
    if problems:
        raise ConfigError(problems, source)
    return resolve_phase_paths(_resolve_paths(cfg, base_dir or Path.cwd()), base_dir or Path.cwd())


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load and validate a YAML run config.

    Raises:
        ConfigError: the file is missing or not YAML, or any value is invalid.
    """
    p = Path(path)
    data = read_yaml_mapping(p, "config file")
    return config_from_dict(data, overrides, str(p), p.parent.resolve())


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
