"""The run folder: what a run wrote, and how to find runs again.

Layout of ``<output.dir>/<run name>/``::

    config.yaml        the resolved config (every default written out)
    inputs.json        sha256 and size of every input file, and the model's path
    metrics.jsonl      one line per logged step / validation
    tb/                TensorBoard event files
    adapter/           LoRA adapter (safetensors)          } one of the two
    model/             full weights (safetensors)          }
    tokenizer/         the tokenizer (with added special tokens)
    summary.json       written last: the run is complete when it exists

This module knows nothing of training; it writes and reads files.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import StoreError
from tunelab.files import make_dir, sha256_file

SUMMARY = "summary.json"


def new_run_name(model_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_name).name).strip("-") or "model"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"


def create_run_dir(output_dir: str | Path, name: str) -> Path:
    """Create a fresh run folder; an existing one with a summary is never overwritten.

    Raises:
        StoreError: the folder exists already, or cannot be created.
    """
    path = Path(output_dir) / name
    if path.exists() and any(path.iterdir()):
        raise StoreError(f"run folder {path} exists already",
                         hint="choose another `output.name`, or remove the old run")
    return make_dir(path)


def fingerprint_inputs(paths: list[str]) -> list[dict]:
    """sha256 and size of each input file, so a run can be traced to its exact data."""
    return [{"path": p, "sha256": sha256_file(Path(p)), "bytes": Path(p).stat().st_size} for p in paths]


@dataclass
class RunInfo:
    """A finished run as listed by ``tunelab runs list``."""

    name: str
    path: Path
    summary: dict

    @property
    def complete(self) -> bool:
        return bool(self.summary)


def read_run(path: Path) -> RunInfo:
    """Read a run folder.

    Raises:
        StoreError: the folder is not a tunelab run.
    """
    if not (path / "config.yaml").is_file():
        raise StoreError(f"{path} is not a tunelab run folder (no config.yaml)",
                         hint="`tunelab runs list` shows the runs under ./runs")
    s = path / SUMMARY
    summary = json.loads(s.read_text(encoding="utf-8")) if s.is_file() else {}
    return RunInfo(path.name, path, summary)


def list_runs(output_dir: str | Path) -> list[RunInfo]:
    """Every run folder under ``output_dir``, oldest first (incomplete ones included)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    runs = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and (p / "config.yaml").is_file():
            runs.append(read_run(p))
    return runs


def find_run(ref: str, output_dir: str | Path) -> Path | None:
    """A run folder from a path or a run name under ``output_dir``; None if neither.

    ``output_dir`` has no default here: the default runs folder is a config default
    (``tunelab.config.schema.DEFAULT_RUNS_DIR``), and tracking does not import config.
    """
    p = Path(ref)
    if (p / "config.yaml").is_file():
        return p
    q = Path(output_dir) / ref
    if (q / "config.yaml").is_file():
        return q
    return None
