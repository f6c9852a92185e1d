"""Metric loggers: JSON lines and TensorBoard event files in the run folder."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tunelab.files import write_text_atomic


class RunLogger:
    """Write each metrics record to ``metrics.jsonl`` and to TensorBoard under ``tb/``.

    One JSON object per line: ``{"split", "step", "time", ...metrics}``. Non-finite values
    are written as null so the file stays valid JSON.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:
            self._drop_after(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tb"))

    def _drop_after(self, step: int) -> None:
        """On resume: forget records of steps after the checkpoint (they are redone)."""
        if not self.path.is_file():
            return
        keep = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        write_text_atomic(self.path, "".join(x + "\n" for x in keep))

    def log(self, split: str, step: int, metrics: dict[str, float]) -> None:
        clean = {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None)
                 for k, v in metrics.items()}
        rec = {"split": split, "step": step, "time": round(time.time(), 3), **clean}
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if v is not None and k != "step" and not k.startswith("rows"):
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def log_event(self, event: str, details: dict) -> None:
        """A non-metric record (e.g. a forced resume), kept in metrics.jsonl."""
        rec = {"split": "event", "event": event, "time": round(time.time(), 3), **details}
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``."""
    p = run_dir / "metrics.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
