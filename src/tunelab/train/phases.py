"""Phased training: hand a model from one phase to the next, and record finished phases.

A phase trains the model the previous phase left in memory. A LoRA phase after a LoRA
phase with the same adapter settings continues that adapter; any other change first
merges an adapter into the weights (LoRA -> full, LoRA -> freeze, LoRA with a new rank),
then attaches what the new phase trains. The record of finished phases (``phases.json``
in the run folder) is what a resumed run skips. This module knows nothing of configs
beyond the settings it compares, and of files beyond the record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.schema import LoraSettings

RECORD = "phases.json"


def is_adapter_model(model: Any) -> bool:
    """True for a peft model (a LoRA adapter over frozen weights)."""
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def hand_over(model: Any, method: str, lora: LoraSettings, prev_lora: LoraSettings | None,
              attach: Callable[[Any], Any]) -> tuple[Any, str]:
    """Make the model the last phase left ready for the next phase's method.

    Args:
        model: the previous phase's trained model (None-free; peft-wrapped or not).
        method: the next phase's ``train.method``.
        lora: the next phase's LoRA settings; ``prev_lora``: the previous phase's (None
            when the previous phase did not train an adapter).
        attach: applies the next phase's method to a plain model (adapter, freezing).

    Returns:
        (the model to train, a short description of what was done).
    """
    if is_adapter_model(model):
        if method == "lora" and prev_lora == lora:
            return model, "continues the adapter of the previous phase"
        # merge_and_unload folds B@A*scale into the base weights: the model computes the
        # same function, now without an adapter.
        return attach(model.merge_and_unload()), f"merged the adapter into the weights, then {method}"
    return attach(model), f"{method} on the previous phase's weights"


@dataclass
class PhaseRecord:
    """One finished phase, as ``phases.json`` keeps it."""

    index: int  # 1-based, as in the folder name phases/phase-<index>
    name: str
    folder: str  # relative to the run folder
    method: str
    handoff: str
    identity: dict  # what a resumed run must still match
    summary: dict = field(default_factory=dict)  # the phase's summary.json


def read_records(run_dir: Path) -> list[PhaseRecord]:
    """The finished phases of a run, in order (empty when none finished)."""
    p = run_dir / RECORD
    if not p.is_file():
        return []
    data = json.loads(p.read_text(encoding="utf-8"))
    return [PhaseRecord(**r) for r in data["phases"]]


def records_json(records: list[PhaseRecord]) -> dict:
    """The content of ``phases.json``."""
    return {"phases": [asdict(r) for r in records]}
