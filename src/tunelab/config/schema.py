"""Typed schema of a run config, one section per concern.

Defaults live here and nowhere else: code reads settings from these objects and never
supplies a fallback of its own. Unknown keys are errors (a typo must not be ignored).
This module knows nothing of files or the command line; ``tunelab.config.loader``
reads YAML and applies overrides.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Input formats by name; tunelab.data.formats implements each (a test keeps them equal).
FormatName = Literal["auto", "chat", "alpaca", "prompt_completion", "sharegpt", "text"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    """Which model to fine-tune and how to load it."""

    name: str = "smollm2-135m-instruct"  # store name, local HF folder, or hub id in the local HF cache
    trust_remote_code: bool = False  # custom model code runs only when this is true
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # fp32: bf16 is slow on CPUs without it
    add_special_tokens: list[str] = Field(default_factory=list)  # new tokens; embeddings are resized


class DataSource(_Section):
    """One input file and how much of it to use."""

    path: str
    format: FormatName = "auto"
    weight: float = Field(1.0, gt=0)  # 2.0 = every row twice; 0.5 = a seeded random half


class DataSettings(_Section):
    """Training and validation data, rendering and length policy."""

    train: list[DataSource]
    validation: list[DataSource] = Field(default_factory=list)
    validation_split: float = Field(0.0, ge=0, lt=1)  # fraction of train held out when no validation file
    chat_template: str | None = None  # None: the tokenizer's; or "chatml", a .jinja path, a template
    max_length: int = Field(1024, gt=0)  # tokens, after the chat template
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


class TrainSettings(_Section):
    """The optimization: rates, batches, schedule, validation and stopping."""

    method: Literal["lora", "full", "freeze"] = "lora"
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, gt=0)  # rows per micro-batch
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
    group_by_length: bool = True  # batch rows of similar length: less padding
    num_threads: int | None = Field(None, gt=0)  # torch threads; None = all cores

    @model_validator(mode="after")
    def _patience_needs_validation(self) -> TrainSettings:
        if self.early_stopping_patience is not None and self.eval_every == 0:
            raise ValueError("early_stopping_patience needs eval_every > 0")
        return self


class OutputSettings(_Section):
    """Where the run folder goes."""

    dir: str = "runs"
    name: str | None = None  # default: <date>-<time>-<model>


class RunConfig(_Section):
    """A whole run: the only object that sees every section."""

    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings
    lora: LoraSettings = Field(default_factory=LoraSettings)
    freeze: FreezeSettings = Field(default_factory=FreezeSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
