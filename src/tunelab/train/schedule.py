"""Learning-rate schedules: warmup then linear, cosine, constant or cyclic cosine."""

from __future__ import annotations

import math
from typing import Any

from transformers import get_scheduler


def warmup_steps(total_steps: int, warmup_steps_setting: int, warmup_ratio: float) -> int:
    """Warmup in optimizer steps: the explicit count, else the ratio of the total."""
    if warmup_steps_setting:
        return min(warmup_steps_setting, total_steps)
    return math.ceil(total_steps * warmup_ratio)


def build_scheduler(optimizer: Any, name: str, total_steps: int, warmup: int, num_cycles: int) -> Any:
    """A transformers LR scheduler stepping once per optimizer step."""
    kwargs = {}
    if name == "cosine_with_restarts":
        kwargs["scheduler_specific_kwargs"] = {"num_cycles": num_cycles}
    if name == "constant":
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps, **kwargs)
