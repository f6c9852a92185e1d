"""Atomic training checkpoints: write, verify, find, load and rotate.

A checkpoint is a folder ``<run>/checkpoints/step-<8 digits>/`` holding::

    weights.safetensors   the trainable parameters (adapter, unfrozen or all weights)
    optimizer.pt          optimizer state     }  our own files, loaded with
    scheduler.pt          LR schedule state   }  torch.load(weights_only=True):
    rng.pt                torch/python RNGs   }  no code runs on load
    state.json            step, epoch, losses, best so far, what the run must match
    COMPLETE              written last; a folder without it is not a checkpoint

It is written into ``.tmp-step-.../``, every file fsynced, the marker written, then
renamed into place and the parent fsynced. A kill at any moment leaves either the
previous checkpoints untouched or the new one complete. Stray temporary folders are
removed by the next run. Checkpoints are ordered by their step number, never by name.

This module knows nothing of configs or the CLI.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tunelab.errors import TrainingError
from tunelab.files import fsync_dir, fsync_file, set_new_file_mode

COMPLETE = "COMPLETE"
STATE_FILES = ("weights.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json")
_NAME = re.compile(r"^step-(\d{8})$")
FAILPOINT_ENV = "TUNELAB_FAILPOINT"  # test-only fault injection: "<stage>@<step>"


def _failpoint(stage: str, step: int) -> None:
    """Kill this process at a named save stage when the test harness asks for it.

    Tests of crash safety set ``TUNELAB_FAILPOINT=after_weights@4`` in a child
    process; nothing else sets it. SIGKILL gives Python no chance to clean up, exactly
    as a pre-empted machine would.
    """
    want = os.environ.get(FAILPOINT_ENV)
    if want and want == f"{stage}@{step}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (contiguous CPU copies, as safetensors needs)."""
    return {n: p.detach().to("cpu").contiguous().clone()
            for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, step: int, model: Any, optimizer: Any, scheduler: Any,
                    state: dict) -> Path:
    """Write a complete checkpoint for ``step`` atomically.

    Raises:
        OSError: the disk is full or unwritable; the partial folder is removed and the
            earlier checkpoints are untouched.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(trainable_state(model), str(tmp / "weights.safetensors"))
        _failpoint("after_weights", step)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        _failpoint("after_optimizer", step)
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
        set_new_file_mode(tmp)  # safetensors writes 0600 files
        for f in STATE_FILES:
            fsync_file(tmp / f)
        _failpoint("before_marker", step)
        (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
        fsync_file(tmp / COMPLETE)
        fsync_dir(tmp)
        _failpoint("before_rename", step)
        if final.exists():  # an incomplete leftover of the same step (never a complete one)
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
        _failpoint("after_rename", step)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file() and all((path / f).is_file() for f in STATE_FILES)


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), by step number ascending."""
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / COMPLETE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def remove_strays(root: Path) -> list[str]:
    """Delete temporary and incomplete checkpoint folders left by a crash."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        if p.is_dir() and (p.name.startswith(".tmp-") or (_NAME.match(p.name) and not (p / COMPLETE).is_file())):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def rotate(root: Path, keep_last: int | None, protect: Iterable[int] = ()) -> list[int]:
    """Delete complete checkpoints beyond the newest ``keep_last`` (by step), except protected.

    Returns:
        The steps deleted.
    """
    if keep_last is None:
        return []
    found = list_checkpoints(root)
    keep = {s for s, _ in found[-keep_last:]} | set(protect)
    deleted = []
    for step, path in found:
        if step not in keep:
            shutil.rmtree(path)
            deleted.append(step)
    return deleted


def read_checkpoint_state(path: Path) -> dict:
    """The ``state.json`` of a checkpoint, once every state file is known to be there.

    Raises:
        TrainingError: the checkpoint is incomplete or a state file is missing (never a
            silent fresh start).
    """
    missing = [f for f in (*STATE_FILES, COMPLETE) if not (path / f).is_file()]
    if missing:
        raise TrainingError(
            f"checkpoint {path} is missing {', '.join(missing)}; it cannot resume exactly",
            hint="resume from an earlier checkpoint (--resume PATH) or start a new run",
        )
    return json.loads((path / "state.json").read_text(encoding="utf-8"))


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> dict:
    """Restore weights, optimizer, schedule and RNGs; returns the saved ``state.json``.

    Raises:
        TrainingError: the checkpoint is incomplete, or a file does not match this model.
    """
    state = read_checkpoint_state(path)
    weights = load_file(str(path / "weights.safetensors"))
    params = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(params))
    absent = sorted(n for n, p in params.items() if p.requires_grad and n not in weights)
    if unknown or absent:
        raise TrainingError(
            f"checkpoint {path} does not fit this model "
            f"({len(unknown)} unknown and {len(absent)} missing parameters, e.g. "
            f"{(unknown or absent)[0]})",
            hint="resume with the model and method the run was started with",
        )
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)
    # weights_only: our state files hold tensors and plain values; a pickle that
    # would run code is refused by torch before anything executes.
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return state
