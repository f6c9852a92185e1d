"""Typed schema of a run config, one section per concern.

Defaults live here and nowhere else: code reads settings from these objects and never
supplies a fallback of its own. Unknown keys are errors (a typo must not be ignored).
This module knows nothing of files or the command line; ``tunelab.config.loader``
reads YAML and applies overrides.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunelab.config.evaluation import TrainEvalTask
from tunelab.config.task import TaskSettings

# Input formats by name; tunelab.data.formats implements each (a test keeps them equal).
FormatName = Literal["auto", "chat", "alpaca", "prompt_completion", "sharegpt", "text",
                     "classification", "preference", "self_instruct"]

# Defaults that code outside a config also needs (CLI options, function arguments,
# hints): each is written here once and used as its field's default below; everything
# else imports the name (tests/unit/test_defaults.py finds literal copies).
DEFAULT_MODEL = "smollm2-135m-instruct"  # ModelSettings.name; must be in models.catalog.KNOWN_MODELS
DEFAULT_MAX_LENGTH = 1024  # DataSettings.max_length; tokens, after the chat template
DEFAULT_RUNS_DIR = "runs"  # OutputSettings.dir; where run folders go and run names are looked up
GGUF_TYPES = ("f32", "f16", "q8_0")  # `tunelab export --gguf --type`: weight types written
GGUF_CHECK_PROMPTS = 16  # `tunelab export --gguf`: greedy answers compared per reader
GGUF_CHECK_NEW_TOKENS = 48  # ... and tokens per compared answer


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    """Which model to fine-tune and how to load it."""

    name: str = DEFAULT_MODEL  # store name, local HF folder, or hub id in the local HF cache
    trust_remote_code: bool = False  # custom model code runs only when this is true
    # float32 by default: a measured choice would make runs (and the ranks of one run)
    # depend on machine load. auto: bf16 only where a bf16 matmul is measured >= 1.3x
    # faster than fp32 (tunelab.models.hardware); on this CPU it is slower, so fp32.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    add_special_tokens: list[str] = Field(default_factory=list)  # new tokens; embeddings are resized
    # Start from this LoRA adapter's weights instead of a fresh adapter (a run folder or an
    # adapter folder trained on this same model): continued training, `tunelab retrain`.
    # The adapter's own shape (rank, alpha, targets) is used; the lora section is not.
    adapter: str | None = None


class DataSource(_Section):
    """One input file and how much of it to use."""

    path: str
    format: FormatName = "auto"
    weight: float = Field(1.0, gt=0)  # 2.0 = every row twice; 0.5 = a seeded random half
    text_field: str | None = None  # with a task: this file's text column, if not task.text_field


class DataSettings(_Section):
    """Training and validation data, rendering and length policy."""

    train: list[DataSource]
    validation: list[DataSource] = Field(default_factory=list)
    validation_split: float = Field(0.0, ge=0, lt=1)  # fraction of train held out when no validation file
    train_rows: int | None = Field(None, gt=0)  # a seeded random N of the training rows (after the split)
    chat_template: str | None = None  # None: the tokenizer's; or "chatml", a .jinja path, a template
    # How tools, calls and results are rendered (tunelab.data.tool_text): auto = the template's
    # own when it renders tools, else the fallback layout; the choice is stored with the run.
    tool_format: Literal["auto", "template", "fallback"] = "auto"
    max_length: int = Field(DEFAULT_MAX_LENGTH, gt=0)  # tokens, after the chat template
    overlength: Literal["drop", "truncate", "error"] = "drop"  # counts go in the run summary

    @field_validator("train", "validation", mode="before")
    @classmethod
    def _paths_as_sources(cls, v: object) -> object:
        # `train: data.jsonl` and `train: [a.jsonl, b.jsonl]` are shorthands for sources.
        if isinstance(v, str):
            return [{"path": v}]
        if isinstance(v, dict):
            return [v]
        if isinstance(v, list):
            return [{"path": x} if isinstance(x, str) else x for x in v]
        return v

    @field_validator("train")
    @classmethod
    def _train_not_empty(cls, v: list[DataSource]) -> list[DataSource]:
        if not v:
            raise ValueError("needs at least one training file")
        return v


class LoraSettings(_Section):
    """LoRA adapter shape (used when method is lora)."""

    r: int = Field(16, gt=0)  # rank: higher = more capacity, more memory
    alpha: float = Field(32, gt=0)  # scale = alpha / r
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class FreezeSettings(_Section):
    """What stays trainable when method is freeze."""

    last_k_blocks: int | None = Field(None, gt=0)  # train only the last K transformer blocks
    pattern: str | None = None  # regex on parameter names to train
    train_embeddings: bool = False

    @model_validator(mode="after")
    def _one_rule(self) -> FreezeSettings:
        if self.last_k_blocks is None and self.pattern is None:
            self.last_k_blocks = 2
        return self


class DpoSettings(_Section):
    """Preference tuning (``train.method: dpo``): the DPO loss on preference pairs."""

    beta: float = Field(0.1, gt=0)  # strength of the pull toward the reference model
    loss: Literal["sigmoid"] = "sigmoid"  # -log sigmoid(beta * margin), as in the DPO paper


# Methods that train a LoRA adapter over frozen weights (dpo trains one on preference pairs).
ADAPTER_METHODS = ("lora", "dpo")


class TrainSettings(_Section):
    """The optimization: rates, batches, schedule, validation and stopping."""

    # dpo: a LoRA adapter (the lora section) trained on preference pairs with train.dpo
    method: Literal["lora", "full", "freeze", "dpo"] = "lora"
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, gt=0)  # rows per micro-batch (dpo: pairs, two sequences each)
    gradient_accumulation_steps: int = Field(1, gt=0)  # micro-batches per optimizer step
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # optimizer steps; overrides epochs when set
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # of total steps; used when warmup_steps is 0
    lr_scheduler: Literal["linear", "cosine", "constant", "cosine_with_restarts"] = "linear"
    num_cycles: int = Field(1, gt=0)  # restarts for cosine_with_restarts (cyclic)
    max_grad_norm: float | None = Field(1.0, gt=0)
    dropout: float | None = Field(None, ge=0, lt=1)  # model dropout override (attention/hidden)
    seed: int = 0
    eval_every: int = Field(0, ge=0)  # optimizer steps between validations; 0 = at the end only
    eval_at_start: bool = True  # validate before the first step: the baseline to beat
    early_stopping_patience: int | None = Field(None, gt=0)  # validations without improvement
    keep_best: bool = True  # save the weights of the best validation loss as the result
    save_every: int = Field(50, ge=0)  # optimizer steps between checkpoints; 0 = only on a stop signal
    keep_last: int | None = Field(2, gt=0)  # complete checkpoints kept (None = all)
    log_every: int = Field(1, gt=0)  # optimizer steps between metric lines
    group_by_length: bool = True  # batch rows of similar length: less padding (padded batches only)
    packing: bool = True  # padding-free packed micro-batches where the model supports them
    fused_lora: bool = True  # one fused kernel sequence per LoRA linear (exact; see train/fastpath.py)
    num_threads: int | None = Field(None, gt=0)  # torch threads; None = all cores
    dpo: DpoSettings = Field(default_factory=DpoSettings)  # used when method is dpo

    @model_validator(mode="after")
    def _patience_needs_validation(self) -> TrainSettings:
        if self.early_stopping_patience is not None and self.eval_every == 0:
            raise ValueError("early_stopping_patience needs eval_every > 0")
        return self


class OutputSettings(_Section):
    """Where the run folder goes."""

    dir: str = DEFAULT_RUNS_DIR
    name: str | None = None  # default: <date>-<time>-<model>


# The sections a phase may change (partially), and the scalar types a search may try.
PHASE_SECTIONS = ("data", "train", "lora", "freeze")
SearchValue = str | int | float | bool | None


class SearchParam(_Section):
    """One dimension of a search space; its key in ``search.params`` is a dotted config path."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None  # float/int: inclusive lower bound
    high: float | None = None  # float/int: inclusive upper bound
    log: bool = False  # sample on a log scale (learning rates); needs low > 0
    step: float | None = Field(None, gt=0)  # float/int: only multiples of step above low
    choices: list[SearchValue] | None = None  # categorical: the values to choose from
    values: list[float] | None = None  # float/int: the points the grid sampler tries

    @model_validator(mode="after")
    def _shape(self) -> SearchParam:
        problems = []
        if self.type == "categorical":
            if not self.choices:
                problems.append("a categorical parameter needs a non-empty `choices` list")
            if self.low is not None or self.high is not None or self.values is not None:
                problems.append("a categorical parameter takes `choices`, not low/high/values")
        else:
            if self.low is None or self.high is None:
                problems.append(f"{self.type} parameters need `low` and `high`")
            elif self.low > self.high:
                problems.append(f"low ({self.low}) is above high ({self.high})")
            else:
                if self.log and self.low <= 0:
                    problems.append(f"log: true needs low > 0 (given low: {self.low})")
                if self.log and self.step is not None:
                    problems.append("log and step cannot be combined")
                outside = [v for v in self.values or [] if not self.low <= v <= self.high]
                if outside:
                    problems.append(f"values {outside} lie outside [{self.low}, {self.high}]")
            if self.type == "int":
                ends = [x for x in (self.low, self.high, *(self.values or [])) if x is not None]
                if any(not float(x).is_integer() for x in ends):
                    problems.append("an int parameter needs whole numbers for low, high and values")
            if self.choices is not None:
                problems.append(f"{self.type} parameters take low/high (and values), not choices")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def grid_values(self) -> list[SearchValue] | None:
        """The points a grid search tries (None: a range without explicit values)."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.values is None:
            return None
        return [int(v) for v in self.values] if self.type == "int" else list(self.values)


class SearchSettings(_Section):
    """`tunelab tune`: the search space, the objective, and how trials are chosen and pruned."""

    params: dict[str, SearchParam]  # dotted config path -> its range, e.g. train.learning_rate
    metric: Literal["loss", "perplexity", "token_accuracy"] = "loss"  # validation metric of a trial
    direction: Literal["minimize", "maximize"] | None = None  # None: maximize accuracy, else minimize
    trials: int = Field(20, gt=0)  # in total, over every worker and restart
    sampler: Literal["grid", "random", "tpe"] = "tpe"  # grid needs values (or choices) per parameter
    pruner: Literal["none", "median", "hyperband"] = "median"  # judged at each validation
    startup_trials: int = Field(2, ge=0)  # finished trials before the median pruner prunes
    warmup_steps: int = Field(0, ge=0)  # optimizer steps of a trial before it can be pruned
    seed: int = 0  # the sampler's seed (a trial's training seed is train.seed)
    study: str | None = None  # study name and folder under output.dir; None: the config file's stem
    storage: str | None = None  # SQLAlchemy URL (postgresql://...); None: SQLite in the study folder
    heartbeat_seconds: int = Field(30, ge=0)  # 0 = off; a trial silent for 4x this is failed, retried
    enqueue: list[dict[str, SearchValue]] = Field(default_factory=list)  # trials to run first, fixed values

    @field_validator("params")
    @classmethod
    def _some_params(cls, v: dict[str, SearchParam]) -> dict[str, SearchParam]:
        if not v:
            raise ValueError("needs at least one parameter to search")
        return v

    @model_validator(mode="after")
    def _direction_from_metric(self) -> SearchSettings:
        if self.direction is None:
            self.direction = "maximize" if self.metric == "token_accuracy" else "minimize"
        return self


class PhaseSettings(_Section):
    """One phase of a phased run: a partial override of the data, train, lora, freeze sections.

    The sections are validated merged into the run's own (see ``tunelab.config.compose``).
    """

    name: str | None = None  # a label for reports; folders are phases/phase-<n>
    data: dict[str, Any] = Field(default_factory=dict)  # e.g. {train: domain.jsonl}
    train: dict[str, Any] = Field(default_factory=dict)  # e.g. {learning_rate: 5e-5, max_steps: 100}
    lora: dict[str, Any] = Field(default_factory=dict)
    freeze: dict[str, Any] = Field(default_factory=dict)


class RunConfig(_Section):
    """A whole run: the only object that sees every section."""

    task: TaskSettings | None = None  # None: rows are read by format (chats, Alpaca, ...)
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings
    lora: LoraSettings = Field(default_factory=LoraSettings)
    freeze: FreezeSettings = Field(default_factory=FreezeSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    search: SearchSettings | None = None  # used by `tunelab tune`; `tunelab train` ignores it
    phases: list[PhaseSettings] = Field(default_factory=list)  # empty: one phase, the sections above
    eval_tasks: list[TrainEvalTask] = Field(default_factory=list)  # `tunelab eval` tasks at validations

    @model_validator(mode="after")
    def _adapter_needs_lora(self) -> RunConfig:
        if self.model.adapter is not None and self.train.method in ("full", "freeze"):
            raise ValueError(f"model.adapter continues a LoRA adapter, but train.method is "
                             f"{self.train.method!r}; use method lora, or remove model.adapter")
        return self

    @model_validator(mode="after")
    def _task_reads_tables(self) -> RunConfig:
        # A task reads its own columns; a format would say to read the rows another way.
        if self.task is not None:
            named = [f"{key}[{i}] ({s.path}): format {s.format!r}"
                     for key in ("train", "validation")
                     for i, s in enumerate(getattr(self.data, key)) if s.format != "auto"]
            if named:
                raise ValueError("a run with a task reads each table's task.text_field and "
                                 f"task.label_field, so data sources take no format: {'; '.join(named)}; "
                                 "remove `format`, or remove the task section")
        elif any(s.text_field for s in [*self.data.train, *self.data.validation]):
            raise ValueError("a data source's text_field is the task's text column in that file; "
                             "add a task section, or remove text_field")
        return self

    @model_validator(mode="after")
    def _dpo_reads_pairs(self) -> RunConfig:
        # DPO compares two answers to one prompt; a task renders one answer per row.
        if self.train.method == "dpo" and self.task is not None:
            raise ValueError("train.method dpo trains on preference pairs (prompt, chosen, "
                             "rejected), and a task section reads one answer per row; remove "
                             "the task section, or use train.method: lora")
        named = [f"{key}[{i}] ({s.path}): format {s.format!r}"
                 for key in ("train", "validation")
                 for i, s in enumerate(getattr(self.data, key))
                 if s.format not in ("auto", "preference")]
        if self.train.method == "dpo" and named:
            raise ValueError("train.method dpo needs preference pairs, and these sources are "
                             f"read as another format: {'; '.join(named)}; set format: "
                             "preference or auto")
        return self
