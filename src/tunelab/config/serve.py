"""Settings of `tunelab serve`: where it listens, what it serves, its limits and its log.

A ``serve.yaml`` holds these keys at its top level; command-line flags override them
(``load_serve_settings``). Defaults live here and nowhere else: the engine's batching
settings (``tunelab.serve.batching.EngineSettings``) are built from these fields by the
serve recipe, so a default is written once. This module knows nothing of HTTP, uvicorn
or the engine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tunelab.config.problems import validation_problems
from tunelab.config.schema import DEFAULT_RUNS_DIR
from tunelab.errors import ConfigError
from tunelab.files import read_yaml_mapping

DEFAULT_HOST = "127.0.0.1"  # loopback only: binding elsewhere is a choice, and warned about


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FilterSettings(_Section):
    """Filters applied to every answer before it is sent; a filtered answer is marked in the log."""

    redact_pii: bool = False  # replace emails, phones, cards, IPs, keys (tunelab.gate.pii) with [redacted]
    blocklist: list[str] = Field(default_factory=list)  # regex patterns; a match becomes [blocked]

    @field_validator("blocklist")
    @classmethod
    def _patterns_compile(cls, v: list[str]) -> list[str]:
        bad = []
        for p in v:
            try:
                if re.compile(p).search("") is not None:
                    bad.append(f"{p!r} matches the empty text")
            except re.error as e:
                bad.append(f"{p!r} is not a regular expression ({e})")
        if bad:
            raise ValueError("; ".join(bad))
        return v


MAX_WEIGHT = 1e6  # weights are relative; a bigger one is a typo, and inf would route nobody


class VariantSettings(_Section):
    """One arm of an experiment: a served model and its share of new units."""

    name: str = Field(min_length=1, max_length=200)  # said in the response header and logged
    model: str = Field(min_length=1)  # a served model's name or alias
    # relative share of units not yet assigned; need not sum to 1 (finite: an infinite
    # weight would make every share NaN)
    weight: float = Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False)


class ExperimentSettings(_Section):
    """Traffic split between served models: a request naming ``name`` goes to one variant."""

    name: str = Field(min_length=1, max_length=200)  # what a request puts in `model`
    variants: list[VariantSettings] = Field(min_length=2)
    control: str | None = None  # the variant others are compared with; None: the first
    unit: Literal["user", "request"] = "user"  # user: one user keeps one variant; request: each anew
    unit_header: str = "X-Tunelab-User"  # the unit when the body has no `user` field

    @field_validator("variants")
    @classmethod
    def _names_unique_and_weighted(cls, v: list[VariantSettings]) -> list[VariantSettings]:
        names = [x.name for x in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"variant names must differ; repeated: {', '.join(twice)}")
        if not sum(x.weight for x in v) > 0:
            raise ValueError("at least one variant needs a weight above 0")
        return v

    @field_validator("control")
    @classmethod
    def _control_is_a_variant(cls, v: str | None, info: Any) -> str | None:
        names = [x.name for x in info.data.get("variants") or []]
        if v is not None and names and v not in names:
            raise ValueError(f"{v!r} is not one of the variants ({', '.join(names)})")
        return v

    @property
    def control_variant(self) -> str:
        """The control's name: ``control`` or the first variant."""
        return self.control or self.variants[0].name


class MonitorSettings(_Section):
    """When production prompts count as drifted from the training data (`tunelab monitor`)."""

    psi_threshold: float = Field(0.2, gt=0)  # population stability index above this: drift
    p_value: float = Field(0.01, gt=0, lt=1)  # and the two-sample test below this
    min_prompts: int = Field(50, gt=0)  # fewer production prompts: too few to judge
    interval: float = Field(300.0, gt=0)  # seconds between recomputing the server's drift gauges
    window: float = Field(86400.0, gt=0)  # seconds of request log the server's drift gauges judge


class ServeSettings(_Section):
    """Everything `tunelab serve` reads: the models, the address, limits, log and filters."""

    models: list[str] = Field(default_factory=list)  # store names, model folders, run folders or names
    aliases: dict[str, str] = Field(default_factory=dict)  # name a request may use -> one of models
    host: str = DEFAULT_HOST
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port (the URL printed names it)
    runs_dir: str = DEFAULT_RUNS_DIR  # where run names are looked up
    db: str | None = None  # SQLAlchemy URL of the request log; None: SQLite under the tunelab home
    log_text: bool = True  # false: the log keeps counts and timings, never prompts or answers
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # server logs (never texts at info)
    max_tokens: int = Field(1024, gt=0)  # the most tokens one answer may ask for
    max_request_bytes: int = Field(1_048_576, gt=0)  # a bigger request body gets 413
    default_max_tokens: int = Field(256, gt=0)  # tokens per answer when a request names none
    max_queue: int = Field(64, gt=0)  # requests waiting for a slot; one more gets 429
    max_batch_size: int = Field(16, gt=0)  # sequences decoding together
    prefill_tokens: int = Field(2048, gt=0)  # prompt tokens prefilled per engine step
    drain_timeout: float = Field(30.0, ge=0)  # seconds in-flight requests get after SIGTERM
    public_metrics: bool = False  # true: GET /metrics without a key (for a scraper inside a trusted network)
    filters: FilterSettings = Field(default_factory=FilterSettings)
    experiments: list[ExperimentSettings] = Field(default_factory=list)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)

    @field_validator("experiments")
    @classmethod
    def _experiment_names_unique(cls, v: list[ExperimentSettings]) -> list[ExperimentSettings]:
        names = [x.name for x in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"experiment names must differ; repeated: {', '.join(twice)}")
        return v

    @field_validator("default_max_tokens")
    @classmethod
    def _default_within_cap(cls, v: int, info: Any) -> int:
        cap = info.data.get("max_tokens")
        if cap is not None and v > cap:
            raise ValueError(f"is above max_tokens ({cap}); lower it or raise max_tokens")
        return v


def serve_settings(data: dict[str, Any], source: str | None = None) -> ServeSettings:
    """Validate serve settings given as a dict.

    Raises:
        ConfigError: every problem, each with its key and the value given.
    """
    try:
        return ServeSettings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_problems(e, ServeSettings), source) from None


def load_serve_settings(path: str | Path | None, overrides: dict[str, Any] | None = None) -> ServeSettings:
    """Read a serve YAML (or none) and apply overrides (top-level keys whose value is not None).

    A relative model folder in the file that exists beside the file is taken from the
    file's folder, so a config works from any working directory.

    Args:
        path: the YAML file, or None for the defaults.
        overrides: e.g. from command-line flags; ``models`` given here replace the file's.

    Raises:
        ConfigError: the file is missing, not YAML or not a mapping, or a value is invalid.
    """
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        data = read_yaml_mapping(path, "serve config")
        base = Path(path).resolve().parent
        if isinstance(data.get("models"), list):
            data["models"] = [_beside(m, base) for m in data["models"]]
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return serve_settings(data, source)


def _beside(ref: Any, base: Path) -> Any:
    if isinstance(ref, str) and not Path(ref).is_absolute() and (base / ref).is_dir():
        return str(base / ref)
    return ref
