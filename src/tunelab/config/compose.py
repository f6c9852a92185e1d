"""Configs made from configs: a phase's config, a trial's config, and their checks.

A phase is a partial override of the data, train, lora and freeze sections; a trial sets
the dotted paths of ``search.params`` to sampled values. Both are validated here against
the same schema as the run itself, so a phase or a search value that could never train
is reported with the rest of the config's problems, each with its path. This module
knows nothing of optuna, models or files beyond resolving data paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from tunelab.config.problems import key_suggestion, unknown_key_message
from tunelab.config.schema import (
    PHASE_SECTIONS,
    DataSettings,
    FreezeSettings,
    LoraSettings,
    ModelSettings,
    RunConfig,
    SearchParam,
    TrainSettings,
)
from tunelab.errors import ConfigError

# Sections whose single settings a search may set (output and the lists of files may not).
SECTIONS: dict[str, type[BaseModel]] = {"model": ModelSettings, "data": DataSettings,
                                        "lora": LoraSettings, "freeze": FreezeSettings,
                                        "train": TrainSettings}


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(get_origin(a) is list for a in get_args(annotation))


def _msg(err: ErrorDetails) -> str:
    return err["msg"].removeprefix("Value error, ")


def _field_value_problems(section: str, field: str, raw_section: Any, value: Any) -> list[str]:
    """Why ``value`` is not a valid ``section.field`` given the rest of the raw section."""
    cls = SECTIONS[section]
    base = dict(raw_section) if isinstance(raw_section, dict) else {}
    try:
        cls.model_validate({**base, field: value})
    except ValidationError as e:
        mine = [err for err in e.errors() if err["loc"][:1] == (field,)]
        if not mine and base:
            try:  # a model-level rule broken by this value (not by the section itself)
                cls.model_validate(base)
            except ValidationError:
                return []
            mine = [err for err in e.errors() if not err["loc"]]
        return [_msg(err) for err in mine]
    return []


def _search_path_problem(path: str) -> str | None:
    parts = path.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        return (f"not a setting path; use SECTION.KEY with a section of "
                f"{', '.join(SECTIONS)} (e.g. train.learning_rate)")
    section, field = parts
    info = SECTIONS[section].model_fields.get(field)
    if info is None:
        return f"{section} has no setting {field!r} ({key_suggestion(SECTIONS[section], parts[1:])})"
    if _is_list(info.annotation):
        return f"{path} holds a list; a search sets single values only"
    return None


def _search_problems(search: dict, data: dict) -> list[str]:
    problems: list[str] = []
    params = search.get("params")
    if not isinstance(params, dict):
        return problems
    parsed: dict[str, SearchParam] = {}
    for path, spec in params.items():
        where = f"search.params.{path}"
        bad_path = _search_path_problem(str(path))
        if bad_path:
            problems.append(f"{where}: {bad_path}")
            continue
        try:
            p = parsed[path] = SearchParam.model_validate(spec)
        except ValidationError:
            continue  # reported by the schema already
        section, field = path.split(".")
        # SearchParam checked the shape: choices for categorical, low and high otherwise.
        tried: list[Any] = (p.choices or []) if p.type == "categorical" else [p.low, p.high, *(p.values or [])]
        if p.type == "int":
            tried = [int(v) for v in tried]
        seen: set[str] = set()
        for v in tried:
            if repr(v) in seen:
                continue  # each distinct value once
            seen.add(repr(v))
            for why in _field_value_problems(section, field, data.get(section), v):
                problems.append(f"{where}: {v!r} is not a valid {path} ({why})")
    if search.get("sampler") == "grid":
        for path, p in parsed.items():
            if p.grid_values() is None:
                problems.append(f"search.params.{path}: the grid sampler needs explicit `values` "
                                f"for this {p.type} parameter (e.g. values: [{p.low}, {p.high}])")
    for i, fixed in enumerate(search.get("enqueue") or []):
        if isinstance(fixed, dict):
            unknown = sorted(set(fixed) - set(params))
            if unknown:
                problems.append(f"search.enqueue.{i}: {', '.join(unknown)} not among search.params "
                                f"({', '.join(params)})")
    return problems


def _phase_problems(i: int, phase: dict, data: dict) -> list[str]:
    problems: list[str] = []
    for section in PHASE_SECTIONS:
        override = phase.get(section)
        if not isinstance(override, dict) or not override:
            continue
        raw = data[section] if isinstance(data.get(section), dict) else {}
        if section == "data" and not raw and "train" not in override:
            continue  # the base data section is missing: reported already
        cls = SECTIONS[section]
        try:
            cls.model_validate({**raw, **override})
        except ValidationError as e:
            base_ok = True
            try:
                cls.model_validate(raw)
            except ValidationError:
                base_ok = False
            for err in e.errors():
                loc = err["loc"]
                if (loc and loc[0] in override) or (not loc and base_ok):
                    tail = "." + ".".join(map(str, loc)) if loc else ""
                    msg = unknown_key_message(cls, loc) if err["type"] == "extra_forbidden" \
                        else f"{_msg(err)} (given: {err.get('input')!r})"
                    problems.append(f"phases.{i}.{section}{tail}: {msg}")
    return problems


def cross_section_problems(data: dict) -> list[str]:
    """Problems the per-section schema cannot see: search paths and values, phase overrides.

    Works on the raw (overridden) dict, so they are reported together with the schema's
    own problems; malformed blocks are skipped here (the schema reports them).
    """
    problems: list[str] = []
    search = data.get("search")
    if isinstance(search, dict):
        problems += _search_problems(search, data)
    phases = data.get("phases")
    if isinstance(phases, list):
        for i, phase in enumerate(phases):
            if isinstance(phase, dict):
                problems += _phase_problems(i, phase, data)
    return problems


def _sources(value: Any, base: Path) -> list[dict]:
    """A phase's ``train``/``validation`` value as source dicts with absolute paths."""
    items = [value] if isinstance(value, (str, dict)) else list(value or [])
    out = []
    for x in items:
        src = {"path": x} if isinstance(x, str) else dict(x)
        p = Path(str(src["path"])).expanduser()
        src["path"] = str(p if p.is_absolute() else (base / p).resolve())
        out.append(src)
    return out


def resolve_phase_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Make each phase's data paths absolute (relative ones start from ``base``) source dicts."""
    for phase in cfg.phases:
        for key in ("train", "validation"):
            if key in phase.data:
                phase.data[key] = _sources(phase.data[key], base)
    return cfg


def _validated(data: dict, what: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        problems = [f"{'.'.join(map(str, err['loc']))}: {_msg(err)}" for err in e.errors()]
        raise ConfigError(problems, what) from None


def phase_config(cfg: RunConfig, index: int) -> RunConfig:
    """The full config of phase ``index`` (0-based): the run's sections with its overrides.

    The result has no phases and no search block: it is an ordinary one-phase run.

    Raises:
        ConfigError: the merged config is invalid (checked at load time already).
    """
    data = cfg.model_dump(mode="json", exclude={"phases", "search"})
    phase = cfg.phases[index]
    for section in PHASE_SECTIONS:
        data[section] = {**data[section], **getattr(phase, section)}
    return _validated(data, f"phase {index + 1}")


def apply_values(cfg: RunConfig, values: dict[str, Any], keep_search: bool = False) -> RunConfig:
    """``cfg`` with each dotted path of ``values`` set (a trial's config).

    Raises:
        ConfigError: a value is invalid for its setting.
    """
    data = cfg.model_dump(mode="json", exclude=None if keep_search else {"search"})
    for path, value in values.items():
        section, field = path.split(".")
        data[section][field] = value
    return _validated(data, "the trial's settings")
