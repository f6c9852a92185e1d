"""Typed settings of `tunelab eval`: the task, prompts, statistics and fairness thresholds.

An evaluation config is a small YAML file of its own (not a section of the run config)::

    task: classify
    labels: ["0", "1"]
    label_names: {"0": negative, "1": positive}   # the prompt asks for words
    thresholds: {max_flip_rate: 0.05}

Command-line flags override single values (``--labels``, ``--limit``, ...). Defaults
live here and nowhere else. This module knows nothing of models or files beyond reading
the YAML; ``tunelab.recipes.evaluate`` runs the evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunelab.config.problems import validation_problems
from tunelab.config.task import Normalizer, ScoreMethod, TaskSettings, labels_as_text
from tunelab.errors import ConfigError
from tunelab.files import read_yaml_mapping

TaskName = Literal["classify", "regress", "generate", "perplexity", "bbq", "tool_call"]
# Tokens per generated answer by task: a label or a number is short, a worked answer is not.
# A tool call is one JSON line: 96 tokens hold a name and a few arguments.
DEFAULT_MAX_NEW_TOKENS = {"classify": 12, "bbq": 12, "regress": 12, "generate": 256,
                          "perplexity": 1, "tool_call": 96}
# How a task picks among fixed answers when no run's task says: the answer generated is
# matched. A run trained for a classify task scores its label words instead
# (TaskSettings.method, likelihood by default), which a model that never learnt the words
# as answers is not fit for: SmolLM2 untuned, asked 40 SST-2 rows, scores 47.5% by label
# likelihood (it prefers one word whatever the text) and more by its free answers.
DEFAULT_METHOD: dict[str, ScoreMethod] = {"classify": "generate", "bbq": "generate"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FairnessThresholds(_Section):
    """Limits above which ``--fail-on-bias`` fails the evaluation (all shares in [0, 1])."""

    max_flip_rate: float = Field(0.10, ge=0, le=1)  # counterfactual variants whose answer changes
    max_group_gap: float = Field(0.10, ge=0, le=1)  # metric gap between counterfactual groups
    max_bbq_bias: float = Field(0.20, ge=0, le=1)  # |s_DIS| and |s_AMB|, each in [-1, 1]
    max_demographic_parity_difference: float = Field(0.10, ge=0, le=1)
    max_equalized_odds_gap: float = Field(0.10, ge=0, le=1)


class EvalSettings(_Section):
    """One evaluation: what to ask, how to score it, and what to slice and probe."""

    task: TaskName = "classify"
    text_field: str | None = None  # a table column holding the prompt; None: the row's chat
    label_field: str = "label"  # the column (or meta key) with the truth / reference
    labels: list[str] | None = None  # classify: the classes as written in the file
    label_names: dict[str, str] = Field(default_factory=dict)  # file label -> word in the prompt
    system_prompt: str | None = None  # None: classify/regress build one; others send none ("" = none)
    template: str | None = None  # the user turn with {text} (and {labels}); None: the task's default
    method: ScoreMethod | None = None  # classify/bbq: label scores or free answer; None: a run's
    # task's method (likelihood by default), else DEFAULT_METHOD
    abstain_below: float | None = Field(None, gt=0, lt=1)  # classify, likelihood: abstain under this
    normalizer: Normalizer = "exact"  # generate: how answers are compared for exact match
    max_new_tokens: int | None = Field(None, gt=0)  # per answer; None: the task's default
    batch_size: int = Field(16, gt=0)  # prompts per forward pass
    limit: int | None = Field(None, gt=0)  # the first N rows of the file
    slice_by: list[str] = Field(default_factory=list)  # meta fields; "length" and "label" are built in
    length_buckets: list[int] = Field(default_factory=lambda: [64, 128, 256, 512])  # characters
    group_field: str | None = None  # classify: group fairness (parity, equalized odds) by this field
    counterfactual: list[str] | None = None  # categories to swap ([] = all); None = no probe
    terms: str | None = None  # a YAML file that extends the counterfactual term lists
    bootstrap_samples: int = Field(1000, gt=0)  # paired-bootstrap resamples for --compare
    confidence: float = Field(0.95, gt=0, lt=1)  # width of the confidence intervals
    seed: int = 0  # bootstrap and review-sheet shuffling
    review_rows: int = Field(0, ge=0)  # rows on the human review sheet (0 = no sheet)
    thresholds: FairnessThresholds = Field(default_factory=FairnessThresholds)

    @model_validator(mode="after")
    def _task_tokens(self) -> EvalSettings:
        # Filled in through __dict__: an assignment would count them as given, and
        # ``with_task`` must know which values the user chose.
        if self.max_new_tokens is None:
            self.__dict__["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS[self.task]
        if self.method is None and self.task in ("classify", "bbq"):
            self.__dict__["method"] = DEFAULT_METHOD[self.task]
        return self

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, v: object) -> object:
        return labels_as_text(v)  # a mapping stays one, for validation to refuse

    @field_validator("label_names", mode="before")
    @classmethod
    def _names_as_text(cls, v: object) -> object:
        if isinstance(v, dict):
            return {str(k): str(x) for k, x in v.items()}
        return v

    @field_validator("labels")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (len(v) < 2 or len(set(v)) != len(v)):
            raise ValueError("needs two or more distinct labels")
        return v


class TrainEvalTask(EvalSettings):
    """An evaluation run during training (``eval_tasks:`` in a run config).

    It runs at the validations (``train.eval_every``) whose step is a multiple of
    ``every``, and after the last step, on the first ``limit`` rows of ``data``; its
    numbers go to the run's metrics log as split ``eval_<name>``. Fairness probes,
    slices and review sheets are for `tunelab eval`, not here.
    """

    data: str  # the rows (a path; relative paths are taken from the working directory)
    name: str | None = None  # default: the task and the file's stem
    every: int = Field(1, gt=0)  # optimizer steps; only validation steps are candidates
    limit: int | None = Field(64, gt=0)  # capped: evaluation must not dominate training


E = TypeVar("E", bound=EvalSettings)


def eval_settings(data: dict[str, Any] | None = None, source: str | None = None) -> EvalSettings:
    """Validate evaluation settings given as a dict.

    Raises:
        ConfigError: every problem, each with its key and the value given.
    """

    try:
        return EvalSettings.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(validation_problems(e, EvalSettings), source) from None


def load_eval_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> EvalSettings:
    """Read an evaluation YAML (or none) and apply overrides (values that are not None).

    Args:
        path: the YAML file, or None for the defaults.
        overrides: top-level keys, e.g. from command-line flags; None values are skipped.

    Raises:
        ConfigError: the file is missing or not a mapping, or a value is invalid.
    """
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        data = read_yaml_mapping(path, "evaluation config")
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return eval_settings(data, source)


def with_task(s: E, task: TaskSettings) -> E:
    """The settings of evaluating a run that declares ``task``: the run's task, columns,
    labels, answer words, prompt and scoring, except where ``s`` was given a value (a
    flag or the evaluation config), which wins. An ``eval_tasks`` entry of a run config
    (``TrainEvalTask``) comes back as one.

    Raises:
        ConfigError: the merged settings do not fit together.
    """
    given = s.model_dump(include=s.model_fields_set)
    if "task" in given and given["task"] != task.type:
        return s  # another task was asked for: the run's task does not apply
    labels = task.label_list()
    from_task: dict[str, Any] = {
        "task": task.type, "text_field": task.text_field, "label_field": task.label_field,
        "labels": labels, "label_names": task.label_names(), "system_prompt": task.system_prompt,
        "template": task.template, "normalizer": task.normalizer,
        "abstain_below": task.abstain_below,
    }
    if task.type == "classify":
        from_task["method"] = task.method
    merged = {**{k: v for k, v in from_task.items() if v is not None}, **given}
    try:
        return type(s).model_validate(merged)
    except ValidationError as e:
        raise ConfigError(validation_problems(e, type(s))) from None
