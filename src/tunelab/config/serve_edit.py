"""Add a canary variant to an experiment of a serve YAML, the file replaced whole.

``add_canary`` gives a new model a share ``weight`` of an experiment's new units: the
canary's weight is ``weight`` and every other variant's weight is scaled by
``(1 - weight) / (their sum)``, so the weights sum to 1 and the old variants keep their
ratios to each other. (Weights only share out units not yet assigned: users who already
have a variant keep it.) The model is appended to ``models:`` unless it is there.

The file is read and written with PyYAML, which does not keep comments; the file as it
was is saved beside it as ``<name>.bak`` first. Both writes are atomic. With
``dry_run`` nothing is written: the checks run before an expensive step (training).

This module knows nothing of runs or servers: it edits a mapping and writes a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunelab.config.serve import serve_settings
from tunelab.errors import ConfigError, DataError, UsageError
from tunelab.files import read_yaml_mapping, write_text_atomic

BACKUP_SUFFIX = ".bak"
_DIGITS = 6  # weights are rounded to this many decimals in the file


@dataclass
class CanaryEdit:
    """What ``add_canary`` changed (or, with ``dry_run``, would change)."""

    config: Path
    experiment: str
    variant: str
    weights: dict[str, float] = field(default_factory=dict)  # every variant's new weight
    model_added: bool = False  # a new entry in models: (the server must restart to load it)
    backup: Path | None = None


def add_canary(path: str | Path, experiment: str, name: str, model_ref: str, weight: float,
               dry_run: bool = False) -> CanaryEdit:
    """Add ``name`` (served from ``model_ref``) to ``experiment`` with share ``weight``.

    Args:
        path: the serve YAML.
        experiment: an experiment the file declares.
        name: the variant's name and the served model's name (a run's folder name).
        model_ref: what to add to ``models:`` when ``name`` is not served yet.
        weight: the canary's share of new units, above 0 and below 1.
        dry_run: check only; write nothing.

    Returns:
        The edit.

    Raises:
        ConfigError: the file is missing, not YAML, or not valid serve settings.
        UsageError: ``weight`` is out of range, the experiment is not in the file, or it
            has a variant of this name already.
    """
    if not 0 < weight < 1:
        raise UsageError(f"the canary's weight must be above 0 and below 1, got {weight}",
                         hint="e.g. --weight 0.1 sends a tenth of new users to it")
    p = Path(path)
    data = read_yaml_mapping(p, "serve config")
    serve_settings(data, str(p))  # the file must be valid before it is changed
    raw = next((e for e in data.get("experiments") or [] if e.get("name") == experiment), None)
    if raw is None:
        names = [e.get("name") for e in data.get("experiments") or []]
        raise UsageError(f"{p} has no experiment {experiment!r} (experiments there: "
                         f"{', '.join(map(str, names)) or 'none'})",
                         hint="name one of them, or add the experiment to the file first")
    variants = raw["variants"]
    if any(v.get("name") == name for v in variants):
        raise UsageError(f"experiment {experiment!r} in {p} has a variant {name!r} already",
                         hint="retrain under another name (--out)")
    total = sum(float(v["weight"]) for v in variants)
    for v in variants:
        v["weight"] = round(float(v["weight"]) * (1 - weight) / total, _DIGITS)
    variants.append({"name": name, "model": name, "weight": weight})
    models = data.setdefault("models", [])
    served = {Path(str(m)).name for m in models} | set(data.get("aliases") or {})
    edit = CanaryEdit(p, experiment, name, {v["name"]: v["weight"] for v in variants},
                      model_added=name not in served)
    if edit.model_added:
        models.append(model_ref)
    try:
        serve_settings(data, str(p))
    except ConfigError as e:
        raise UsageError(f"adding {name!r} would make {p} invalid: {e.message}") from None
    if dry_run:
        return edit
    edit.backup = write_text_atomic(p.with_name(p.name + BACKUP_SUFFIX),
                                    p.read_text(encoding="utf-8"), error=DataError)
    write_text_atomic(p, yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                      error=DataError)
    return edit
