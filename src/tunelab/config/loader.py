"""Read a run config from YAML, apply dotted overrides, validate, report all problems.

``load_config("run.yaml", ["train.learning_rate=1e-4"])`` returns a ``RunConfig`` or
raises one ``ConfigError`` listing every problem with its dotted path and the value
given. A relative data path written in the file starts from the file's folder, so a
config works from any working directory; one given as a command-line override starts
from the current folder, like any other path typed in a shell.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunelab.config.compose import cross_section_problems, resolve_phase_paths
from tunelab.config.problems import validation_problems
from tunelab.config.schema import RunConfig
from tunelab.errors import ConfigError
from tunelab.files import read_yaml_mapping

# Where each resolved data path came from, for the message when it is missing:
# absolute path -> "relative paths in X start from FOLDER".
_Origins = dict[str, str]


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


def _absolute(path: str, base: Path, origins: _Origins, why: str) -> str:
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    out = str((base / p).resolve())
    origins.setdefault(out, why)
    return out


def _anchor_sources(value: Any, base: Path, origins: _Origins, why: str) -> Any:
    """A raw ``train``/``validation`` value with its relative paths made absolute from ``base``.

    Takes every shape the schema accepts (a path, a source dict, a list of either) and
    leaves anything else as it is, for validation to report.
    """
    if isinstance(value, str):
        return _absolute(value, base, origins, why)
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            return {**value, "path": _absolute(value["path"], base, origins, why)}
        return value
    if isinstance(value, list):
        return [_anchor_sources(x, base, origins, why) for x in value]
    return value


def _anchor_data_paths(data: dict, base: Path, origins: _Origins, why: str) -> None:
    """Make the data paths of ``data`` (and of its phases) absolute from ``base``, in place."""
    sections = [data.get("data")]
    if isinstance(data.get("phases"), list):
        sections += [ph.get("data") for ph in data["phases"] if isinstance(ph, dict)]
    for section in sections:
        if isinstance(section, dict):
            for key in ("train", "validation"):
                if key in section:
                    section[key] = _anchor_sources(section[key], base, origins, why)
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("adapter"), str):  # a starting adapter
        model["adapter"] = _absolute(model["adapter"], base, origins, why)


def _build(data: dict, overrides: list[str], source: str | None,
           base_dir: Path | None) -> tuple[RunConfig, _Origins]:
    """The validated config and where each relative data path was resolved from."""
    cwd = Path.cwd()
    origins: _Origins = {}
    data = copy.deepcopy(data)  # the caller's dict stays as given
    # The file's own paths first, from its folder; every relative path left after the
    # overrides was typed on the command line, so it starts from the current folder.
    base = base_dir or cwd
    where = f"in {source}" if source else "in the config"
    _anchor_data_paths(data, base, origins, f"relative paths {where} start from {base}")
    data = apply_overrides(data, overrides)
    _anchor_data_paths(data, cwd, origins,
                       f"relative paths on the command line start from the current folder {cwd}")
    problems: list[str] = []
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        problems = validation_problems(e, RunConfig)
    # Search paths and phase overrides are checked against the schema too, in the same report.
    problems += cross_section_problems(data)
    if problems:
        raise ConfigError(problems, source)
    out = Path(cfg.output.dir).expanduser()
    if not out.is_absolute():  # runs go where the command is run, wherever the config lives
        cfg.output.dir = str((cwd / out).resolve())
    return resolve_phase_paths(cfg, cwd), origins


def config_from_dict(data: dict, overrides: list[str] | None = None, source: str | None = None,
                     base_dir: Path | None = None) -> RunConfig:
    """Validate a config dict (after overrides).

    Args:
        data: the parsed YAML (not changed).
        overrides: ``a.b=value`` strings applied before validation; their relative paths
            start from the current folder.
        source: the file name, for messages.
        base_dir: the folder relative data paths in ``data`` start from (default: cwd).

    Raises:
        ConfigError: every problem found, each with its dotted path and the value given.
    """
    return _build(data, overrides or [], source, base_dir)[0]


def _missing_files(cfg: RunConfig, origins: _Origins) -> list[str]:
    """One problem per data file of the config (or of a phase) that does not exist."""
    found: list[tuple[str, str]] = []
    for key in ("train", "validation"):
        found += [(f"data.{key}.{i}.path", s.path) for i, s in enumerate(getattr(cfg.data, key))]
    for n, phase in enumerate(cfg.phases):
        for key in ("train", "validation"):
            for i, src in enumerate(phase.data.get(key) or []):
                found.append((f"phases.{n}.data.{key}.{i}.path", src["path"]))
    problems = []
    if cfg.model.adapter is not None:
        found.append(("model.adapter", cfg.model.adapter))
    for where, path in found:
        if not Path(path).exists():
            why = f" ({origins[path]})" if path in origins else ""
            problems.append(f"{where}: no such file {path}{why}")
    return problems


def load_config(path: str | Path, overrides: list[str] | None = None,
                check_files: bool = False) -> RunConfig:
    """Load and validate a YAML run config.

    Args:
        path: the YAML file; relative data paths in it start from its folder.
        overrides: ``a.b=value`` strings; relative data paths in them start from the
            current folder.
        check_files: also report every data file that does not exist (the CLI does, so a
            wrong path is a config problem named before any model loads).

    Raises:
        ConfigError: the file is missing or not YAML, or any value is invalid.
    """
    p = Path(path)
    data = read_yaml_mapping(p, "config file")
    cfg, origins = _build(data, overrides or [], str(p), p.parent.resolve())
    if check_files:
        problems = _missing_files(cfg, origins)
        if problems:
            raise ConfigError(problems, str(p))
    return cfg


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
