"""What a training run does differently on each of several data-parallel processes.

Rank 0 alone creates the run folder and writes files; the other ranks are told where it
is, log nowhere, and start from rank 0's trainable weights. The arithmetic that keeps
ranks exact lives in ``tunelab.train.distributed``; this module only knows who writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.config.schema import TrainSettings
from tunelab.errors import TrainingError
from tunelab.tracking.reporter import Reporter
from tunelab.train.distributed import World, broadcast_object, broadcast_params


class NullSink:
    """The metric sink of ranks other than 0."""

    def log(self, split: str, step: int, metrics: dict) -> None:  # noqa: ARG002 - sink API
        return None

    def log_event(self, event: str, details: dict) -> None:  # noqa: ARG002 - sink API
        return None

    def close(self) -> None:
        return None


def open_on_rank0(world: World, open_run: Callable[[], tuple[Path | None, Path]]
                  ) -> tuple[Path, Path | None]:
    """Run ``open_run`` (returns the checkpoint and run folder) on rank 0; tell the others.

    Returns:
        (run folder, checkpoint or None) on every rank.

    Raises:
        TunelabError: on rank 0, what ``open_run`` raised; TrainingError on the others,
            which are never left waiting for a broadcast that does not come.
    """
    if not world.distributed:
        ckpt, run_dir = open_run()
        return run_dir, ckpt
    found: tuple = ("error", "rank 0 could not open the run folder")
    try:
        if world.is_main:
            ckpt, run_dir = open_run()
            found = ("ok", str(run_dir), str(ckpt) if ckpt else None)
    finally:
        found = broadcast_object(found, world)
    if found[0] != "ok":
        raise TrainingError(f"stopped: {found[1]}")
    return Path(found[1]), Path(found[2]) if found[2] else None


def place_replicas(model: Any, device: Any, world: World, settings: TrainSettings,
                   reporter: Reporter) -> None:
    """Move the model to this rank's device and copy rank 0's trainable weights into it."""
    model.to(device)
    broadcast_params([p for p in model.parameters() if p.requires_grad], world)
    if world.is_main:
        rows = settings.batch_size * settings.gradient_accumulation_steps
        reporter.info(f"data parallel: {world.size} processes; each takes 1/{world.size} of the "
                      f"{rows} rows of every optimizer step (batch_size x "
                      "gradient_accumulation_steps, as in one process)")


def refuse_sharding() -> None:
    """Stop an `accelerate launch` that asks for FSDP or DeepSpeed sharding.

    tunelab's data parallelism keeps a full replica of the model in every process; it
    would silently train unsharded, so it refuses instead.

    Raises:
        TrainingError: the launch asked for sharding.
    """
    for env, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(env, "").lower() in ("1", "true", "yes"):
            raise TrainingError(
                f"the launch asks for {name} sharding, which tunelab does not do: each process "
                "holds the whole model and gradients are summed over processes",
                hint="launch with examples/accelerate/ddp.accelerate.yaml, or `tunelab train CONFIG --nproc N`")
