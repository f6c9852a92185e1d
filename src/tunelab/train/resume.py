"""Which run to resume, and whether it may be resumed with the config given now.

A resumed run must match what it was started with: model, data, batch size,
accumulation, seed and method. Anything else is refused with every changed field
named, unless the user forces it, and then the forcing is recorded in the run.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.config.schema import RunConfig
from tunelab.errors import TrainingError
from tunelab.tracking.run_dir import SUMMARY
from tunelab.train.checkpoint import latest_checkpoint

CHECKPOINTS = "checkpoints"


def run_identity(cfg: RunConfig, file_hashes: list[dict]) -> dict:
    """What a resumed run must share with the run it continues."""
    t = cfg.train
    return {
        "model": cfg.model.name,
        "method": t.method,
        "data": [f["sha256"] for f in file_hashes],
        "batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "seed": t.seed,
    }


def identity_changes(saved: dict, now: dict) -> list[str]:
    """Each field that differs, as ``field: was X, now Y``."""
    out = []
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            was, cur = saved.get(key), now.get(key)
            if key == "data":
                was, cur = "fingerprint " + str(was)[:20] + "...", "fingerprint " + str(cur)[:20] + "..."
            out.append(f"{key}: was {was!r}, now {cur!r}")
    return out


def find_resume_point(cfg: RunConfig, resume: str) -> tuple[Path, Path] | None:
    """The run folder and checkpoint to resume from.

    Args:
        cfg: the run config (``output.dir`` / ``output.name`` locate the run for ``auto``).
        resume: ``auto`` (the named run, else the newest unfinished run with a complete
            checkpoint; None when there is none: start fresh), a run folder, or a
            checkpoint folder.

    Raises:
        TrainingError: an explicit path holds no complete checkpoint, or the run finished.
    """
    if resume == "auto":
        root = Path(cfg.output.dir)
        if cfg.output.name:
            candidates = [root / cfg.output.name]
        else:
            candidates = sorted((p for p in root.glob("*") if p.is_dir()),
                                key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
        for run_dir in candidates:
            if (run_dir / SUMMARY).is_file():
                if cfg.output.name:
                    raise TrainingError(f"run {run_dir} has finished already; nothing to resume",
                                        hint="choose a new output.name to train again")
                continue
            ckpt = latest_checkpoint(run_dir / CHECKPOINTS)
            if ckpt is not None:
                return run_dir, ckpt
        return None
    p = Path(resume)
    if (p / "COMPLETE").is_file():
        return p.parent.parent, p
    ckpt = latest_checkpoint(p / CHECKPOINTS)
    if ckpt is None:
        raise TrainingError(f"{p} holds no complete checkpoint to resume from",
                            hint="give a run folder with checkpoints/, or --resume auto")
    if (p / SUMMARY).is_file():
        raise TrainingError(f"run {p} has finished already; nothing to resume")
    return p, ckpt
