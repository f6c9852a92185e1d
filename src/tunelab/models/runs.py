"""Load a trained run (or any model reference) for generation, and merge-export runs.

A run folder holds either a LoRA adapter or full weights, plus its tokenizer; the base
model is found again from the run's recorded path or name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tunelab.config.problems import validation_problems
from tunelab.config.schema import DEFAULT_RUNS_DIR
from tunelab.config.task import TaskSettings
from tunelab.errors import ConfigError, StoreError
from tunelab.files import read_yaml_mapping, set_new_file_mode
from tunelab.models.loading import load_causal_lm, load_tokenizer
from tunelab.models.resolve import resolve_model
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.tracking.run_dir import find_run


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    chat_template: str | None
    label: str
    task: TaskSettings | None = None  # the task a run was trained for (None: none declared)
    tool_format: str | None = None  # how the run rendered tools (None: probe the template)


def run_base_path(run_dir: Path, reporter: Reporter = SILENT) -> Path:
    """The base model folder an adapter run was trained on (its recorded path, else its name).

    Raises:
        ModelNotFoundError: the recorded base is gone and its name resolves to nothing.
    """
    inputs = run_dir / "inputs.json"
    if inputs.is_file():
        rec = json.loads(inputs.read_text(encoding="utf-8"))["model"]
        p = Path(rec["path"])
        if (p / "config.json").is_file():
            return p
        return resolve_model(rec["name"], reporter=reporter)
    cfg = run_settings(run_dir)
    return resolve_model(cfg["model"]["name"], reporter=reporter)


def run_settings(run_dir: Path) -> dict:
    """The resolved config a run was trained with.

    Raises:
        ConfigError: the run's ``config.yaml`` is missing, not YAML or not a mapping.
    """
    return read_yaml_mapping(run_dir / "config.yaml", "run config")


def task_of_run(run_dir: Path) -> TaskSettings | None:
    """The task a run folder was trained for, as training resolved it (None: no task).

    Raises:
        ConfigError: the run's config is unreadable or its task section is invalid.
    """
    raw = run_settings(run_dir).get("task")
    if raw is None:
        return None
    try:
        return TaskSettings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError([f"task.{p}" for p in validation_problems(e, TaskSettings)],
                          str(run_dir / "config.yaml")) from None


def run_task(ref: str, runs_dir: str = DEFAULT_RUNS_DIR) -> TaskSettings | None:
    """The task of a run reference (None: not a run, or a run without a task)."""
    run_dir = find_run(ref, runs_dir)
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return None
    return task_of_run(run_dir)


def load_for_inference(ref: str, runs_dir: str = DEFAULT_RUNS_DIR, dtype: str = "float32",
                       reporter: Reporter = SILENT) -> Loaded:
    """Load a run folder (adapter or weights) or a model reference for generation.

    Args:
        ref: a run folder, a run name under ``runs_dir``, or a model reference.
        runs_dir: where run names are looked up.
        dtype: the weights' dtype in memory.
        reporter: told why a store entry is skipped (an unreadable manifest).

    Raises:
        StoreError: a run folder is incomplete (no summary, adapter or weights).
        ModelNotFoundError: the reference names nothing known.
    """
    run_dir = find_run(ref, runs_dir)
    if run_dir is None:
        path = resolve_model(ref, reporter=reporter)
        tok = load_tokenizer(path)
        return Loaded(load_causal_lm(path, dtype=dtype), tok, None, ref)
    if not (run_dir / "summary.json").is_file():
        raise StoreError(f"run {run_dir} did not finish (no summary.json)",
                         hint="train it again; an unfinished run has no final weights")
    cfg = run_settings(run_dir)
    trust = bool(cfg["model"].get("trust_remote_code", False))
    template = cfg["data"].get("chat_template")
    task = task_of_run(run_dir)
    tok = load_tokenizer(run_dir / "tokenizer", trust_remote_code=trust)
    if (run_dir / "model").is_dir():
        return Loaded(load_causal_lm(run_dir / "model", trust, dtype), tok, template, run_dir.name,
                      task, run_tool_format(run_dir))
    if not (run_dir / "adapter").is_dir():
        raise StoreError(f"run {run_dir} has neither adapter/ nor model/", hint="train it again")
    from peft import PeftModel

    base = load_causal_lm(run_base_path(run_dir, reporter), trust, dtype)
    if len(tok) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tok), mean_resizing=False)
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    model.eval()
    return Loaded(model, tok, template, run_dir.name, task, run_tool_format(run_dir))


def run_tool_format(run_dir: Path) -> str | None:
    """How a run rendered tools (``template`` or ``fallback``), as its ``inputs.json``
    records it; None for runs from before tools (the template is probed then)."""
    inputs = run_dir / "inputs.json"
    if not inputs.is_file():
        return None
    return json.loads(inputs.read_text(encoding="utf-8")).get("tool_format")


def export_merged(ref: str, out: Path, runs_dir: str = DEFAULT_RUNS_DIR, overwrite: bool = False,
                  reporter: Reporter = SILENT) -> Path:
    """Write a standalone model folder (adapter merged in) that plain transformers loads.

    Raises:
        StoreError: ``ref`` is not a complete run, ``out`` exists, or ``out`` cannot be
            written (the old ``out`` is kept until the new one is complete).
    """
    from tunelab.models.export import merge_adapter, swap_in

    run_dir = find_run(ref, runs_dir)
    if run_dir is None or not (run_dir / "summary.json").is_file():
        raise StoreError(f"{ref!r} is not a finished run folder", hint="`tunelab runs list` shows runs")
    cfg = run_settings(run_dir)
    trust = bool(cfg["model"].get("trust_remote_code", False))
    if (run_dir / "model").is_dir():
        if out.exists() and not overwrite:
            raise StoreError(f"{out} exists already", hint="choose a new output folder, or --overwrite")
        import shutil

        tmp = out.with_name(f".{out.name}.tmp")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(run_dir / "model", tmp)
            load_tokenizer(run_dir / "tokenizer").save_pretrained(tmp)
            set_new_file_mode(tmp)  # the run's safetensors were 0600, and copytree keeps modes
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"cannot write the exported model to {tmp.parent}: {e}",
                             hint="check that the folder is writable and the disk has room") from e
        swap_in(tmp, out)  # the old folder goes only once the new one is in place
        return out
    return merge_adapter(run_base_path(run_dir, reporter), run_dir / "adapter", out, run_dir / "tokenizer",
                         overwrite=overwrite, trust_remote_code=trust)
