"""Phased runs (`phases:` in the config), and the entry point that picks phased or not.

Each phase is an ordinary run in ``<run>/phases/phase-<n>/`` (its own data, method,
learning rate and length; its own metrics, checkpoints and summary), trained on the
model the previous phase left in memory (``tunelab.train.phases.hand_over``). The top
of the run folder holds the config, ``phases.json`` (the finished phases), and, at the
end, the final adapter or weights and ``summary.json``. A resumed run rebuilds the
finished phases' model from their saved results, skips them, and continues the phase
it was in from that phase's newest checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tunelab.config.compose import phase_config
from tunelab.config.loader import dump_config
from tunelab.config.schema import ADAPTER_METHODS, RunConfig
from tunelab.errors import TrainingError
from tunelab.files import set_new_file_mode, write_json_atomic, write_text_atomic
from tunelab.models.loading import load_causal_lm
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.tracking.run_dir import (
    SUMMARY,
    create_run_dir,
    fingerprint_inputs,
    new_run_name,
)
from tunelab.train.checkpoint import latest_checkpoint
from tunelab.train.distributed import close_world, cuda_usable, init_world
from tunelab.train.phases import (
    RECORD,
    PhaseRecord,
    hand_over,
    is_adapter_model,
    read_records,
    records_json,
)
from tunelab.train.ranks import open_on_rank0
from tunelab.train.resume import (
    CHECKPOINTS,
    find_resume_point,
    identity_changes,
    run_identity,
)
from tunelab.train.run import StartingPoint, TaskHookFactory, apply_method, load_base, train_run

PHASES = "phases"
Hook = Callable[[int, dict[str, float]], bool]


def run_training(cfg: RunConfig, reporter: Reporter = SILENT, resume: str | None = None,
                 force_resume: bool = False, on_validation: Hook | None = None,
                 task_hook: TaskHookFactory | None = None) -> Path:
    """`tunelab train`: a phased run when the config has phases, else one run.

    Args:
        reporter, resume, force_resume, on_validation, task_hook: as for
            ``tunelab.train.run.train_run``.

    Returns:
        The run folder (complete when it holds ``summary.json``).
    """
    try:
        if cfg.phases:
            return run_phased(cfg, reporter, resume, force_resume, on_validation, task_hook)
        return train_run(cfg, reporter, resume, force_resume, on_validation,
                         task_hook=task_hook).run_dir
    finally:
        close_world()  # a no-op without several processes


def _find_run(cfg: RunConfig, resume: str) -> Path | None:
    """The phased run folder to continue (None: ``auto`` found none; start a new run)."""
    if resume != "auto":
        p = Path(resume)
        p = p.parent.parent if p.parent.name == PHASES else p
        if not (p / PHASES).is_dir():
            raise TrainingError(f"{resume} is not a phased run folder (no {PHASES}/ inside)",
                                hint="give the run folder, or --resume auto")
        if (p / SUMMARY).is_file():
            raise TrainingError(f"run {p} has finished already; nothing to resume")
        return p
    root = Path(cfg.output.dir)
    if cfg.output.name:
        p = root / cfg.output.name
        if (p / SUMMARY).is_file():
            raise TrainingError(f"run {p} has finished already; nothing to resume",
                                hint="choose a new output.name to train again")
        return p if (p / PHASES).is_dir() else None
    found = [p for p in root.glob("*") if (p / PHASES).is_dir() and not (p / SUMMARY).is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def launch_target(cfg: RunConfig, resume: str | None) -> tuple[str | None, str | None]:
    """The run name and ``--resume`` value that every process of a launch must share.

    Returns:
        (a name to set as output.name, or None to keep the config's; the resume value,
        with ``auto`` replaced by the folder it finds, so the ranks cannot disagree).
    """
    if resume not in (None, "auto") or cfg.output.name:
        return None, resume
    if resume == "auto":
        found = _find_run(cfg, "auto") if cfg.phases else find_resume_point(cfg, "auto")
        if found is not None:
            run_dir = found if isinstance(found, Path) else found[0]  # phased: the folder
            return run_dir.name, str(run_dir)
    return new_run_name(cfg.model.name), None


def _phase_cfgs(cfg: RunConfig, top: Path) -> list[RunConfig]:
    out = []
    for i in range(len(cfg.phases)):
        c = phase_config(cfg, i)
        c.output.dir, c.output.name = str(top / PHASES), f"phase-{i + 1}"
        out.append(c)
    return out


def _identity(cfg: RunConfig) -> dict:
    return run_identity(cfg, fingerprint_inputs([s.path for s in [*cfg.data.train, *cfg.data.validation]]))


def _continues(prev: RunConfig | None, cur: RunConfig) -> bool:
    return prev is not None and prev.train.method == cur.train.method == "lora" and prev.lora == cur.lora


def _next_model(current: StartingPoint | None, prev: RunConfig | None, cfg: RunConfig,
                reporter: Reporter = SILENT) -> tuple[StartingPoint, str]:
    """The previous phase's model (or the base model) made ready for ``cfg``'s method."""
    import torch

    torch.manual_seed(cfg.train.seed)  # a new adapter starts the same way on every rank
    if current is None:
        reporter.info(f"loading model {cfg.model.name}")
    base = current or load_base(cfg, reporter)
    prev_lora = prev.lora if prev is not None and prev.train.method == "lora" else None
    model, how = hand_over(base.model, cfg.train.method, cfg.lora, prev_lora,
                           lambda m: apply_method(m, cfg, base.new_token_ids))
    if current is None:
        how = f"{cfg.train.method} on the base model"
    return StartingPoint(base.model_path, base.tokenizer, model, base.new_token_ids), how


def _rebuild(current: StartingPoint | None, prev: RunConfig | None, cfg: RunConfig,
             folder: Path, reporter: Reporter = SILENT) -> StartingPoint:
    """The model a finished phase ended with, from the weights it saved."""
    if cfg.train.method in ADAPTER_METHODS:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        start, _ = _next_model(current, prev, cfg, reporter)
        set_peft_model_state_dict(start.model, load_file(folder / "adapter" / "adapter_model.safetensors"))
        return start
    base = current or load_base(cfg, reporter)
    model = load_causal_lm(folder / "model", cfg.model.trust_remote_code, cfg.model.dtype)
    return StartingPoint(base.model_path, base.tokenizer, model, base.new_token_ids)


def _open_top(cfg: RunConfig, resume: str | None, reporter: Reporter) -> Path:
    """Create the run folder (config, inputs, phases/) or find the one to continue."""
    found = _find_run(cfg, resume) if resume else None
    if found is not None:
        return found
    if resume == "auto":
        reporter.info("resume auto: no unfinished phased run; starting a new run")
    top = create_run_dir(cfg.output.dir, cfg.output.name or new_run_name(cfg.model.name))
    write_text_atomic(top / "config.yaml", dump_config(cfg))
    from tunelab.models.resolve import resolve_model

    files = {s.path for c in _phase_cfgs(cfg, top) for s in [*c.data.train, *c.data.validation]}
    write_json_atomic(top / "inputs.json", {
        "model": {"name": cfg.model.name, "path": str(resolve_model(cfg.model.name, reporter=reporter))},
        "files": fingerprint_inputs(sorted(files))})
    (top / PHASES).mkdir()
    reporter.info(f"run folder: {top} ({len(cfg.phases)} phases)")
    return top


def _check_records(records: list[PhaseRecord], cfgs: list[RunConfig], force: bool,
                   reporter: Reporter) -> None:
    for rec in records:
        changes = identity_changes(rec.identity, _identity(cfgs[rec.index - 1]))
        if changes and not force:
            raise TrainingError(
                f"phase {rec.index} finished with other settings:\n"
                + "\n".join(f"  - {c}" for c in changes),
                hint="restore the original settings, start a new run, or pass --force-resume")
        if changes:
            reporter.warning(f"phase {rec.index} changed since it finished (--force-resume): "
                             + "; ".join(changes))


def _save_final(top: Path, final: StartingPoint, adapter_on_base: bool) -> str:
    """The result at the top of the run folder: an adapter only when its base is the
    original model, else the merged weights (what `tunelab generate` and `export` load)."""
    model = final.model
    if is_adapter_model(model) and adapter_on_base:
        model.save_pretrained(top / "adapter", safe_serialization=True)
        kind = "adapter"
    else:
        if is_adapter_model(model):
            model = model.merge_and_unload()
        model.save_pretrained(top / "model", safe_serialization=True)
        kind = "model"
    final.tokenizer.save_pretrained(top / "tokenizer")
    set_new_file_mode(top / kind)  # safetensors writes its files 0600
    return kind


def _summary(records: list[PhaseRecord], kind: str, started: float, skipped: int) -> dict:
    last = records[-1].summary
    keys = ("steps", "train_loss", "initial_val_loss", "final_val_loss", "best_val_loss",
            "stopped_by_hook", "train_seconds")
    phases = [{"phase": r.index, "name": r.name, "folder": r.folder, "method": r.method,
               "handoff": r.handoff, **{k: r.summary.get(k) for k in keys}} for r in records]
    return {**last, "status": "complete", "artifact": kind, "phases": phases,
            "phases_skipped": skipped,
            "steps": sum(int(r.summary["steps"]) for r in records),
            "train_seconds": round(sum(float(r.summary["train_seconds"]) for r in records), 2),
            "stopped_by_hook": any(r.summary.get("stopped_by_hook") for r in records),
            "wall_seconds": round(time.time() - started, 1)}


def run_phased(cfg: RunConfig, reporter: Reporter = SILENT, resume: str | None = None,
               force_resume: bool = False, on_validation: Hook | None = None,
               task_hook: TaskHookFactory | None = None) -> Path:
    """Train the phases of ``cfg`` in order, handing the model on; see the module docstring.

    Args:
        on_validation: as for ``train_run``, with steps counted over all phases; True
            stops the current phase and skips the rest.

    Returns:
        The run folder; without ``summary.json`` when a signal stopped it.

    Raises:
        TunelabError: a problem with a phase, or a finished phase changed since (unless
            ``force_resume``).
    """
    started = time.time()
    world = init_world(cuda_usable())
    top, _ = open_on_rank0(world, lambda: (None, _open_top(cfg, resume, reporter)))
    cfgs = _phase_cfgs(cfg, top)
    records = read_records(top)
    _check_records(records, cfgs, force_resume, reporter)
    current, prev = None, None
    for rec in records:
        current, prev = (_rebuild(current, prev, cfgs[rec.index - 1], top / rec.folder, reporter),
                         cfgs[rec.index - 1])
    if records and world.is_main:
        reporter.info(f"resuming {top.name}: phase(s) 1-{len(records)} finished; they are skipped")
    offset = sum(int(r.summary["steps"]) for r in records)
    for i in range(len(records), len(cfgs)):
        c, folder = cfgs[i], top / PHASES / f"phase-{i + 1}"
        name = cfg.phases[i].name or f"phase-{i + 1}"
        if (folder / SUMMARY).is_file():  # finished, but stopped before it was recorded
            current, prev = _rebuild(current, prev, c, folder, reporter), c
            summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
            records.append(PhaseRecord(i + 1, name, f"{PHASES}/phase-{i + 1}", c.train.method,
                                       "rebuilt from its saved result", _identity(c), summary))
            offset += int(summary["steps"])
            continue
        start, how = _next_model(current, prev, c, reporter if world.is_main else SILENT)
        if latest_checkpoint(folder / CHECKPOINTS) is None and folder.exists() and world.is_main:
            shutil.rmtree(folder)  # started, never checkpointed: it begins again
        resume_i = str(folder) if latest_checkpoint(folder / CHECKPOINTS) is not None else None
        if world.is_main:
            reporter.info(f"phase {i + 1}/{len(cfgs)} ({cfg.phases[i].name or c.train.method}): {how}")
        hook = None if on_validation is None else \
            (lambda step, m, base=offset: on_validation(base + step, m))
        run = train_run(c, reporter, resume_i, force_resume, hook, start, task_hook)
        assert run.result is not None  # train_run sets it on every return
        if run.result.interrupted:
            return top
        offset += run.result.steps
        current, prev = StartingPoint(start.model_path, start.tokenizer, run.model, start.new_token_ids), c
        if world.is_main:
            summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
            records.append(PhaseRecord(i + 1, name, f"{PHASES}/phase-{i + 1}", c.train.method, how,
                                       _identity(c), summary))
            write_json_atomic(top / RECORD, records_json(records))
        if run.result.stopped_by_hook:
            break  # a pruned search trial: the later phases would be wasted
    if not world.is_main:
        return top
    done = cfgs[:len(records)]
    adapter_on_base = all(c.train.method == "lora" for c in done) and \
        all(_continues(done[j - 1], done[j]) for j in range(1, len(done)))
    assert current is not None  # a phase was trained or rebuilt (cfg.phases is not empty)
    kind = _save_final(top, current, adapter_on_base)
    write_json_atomic(top / SUMMARY, _summary(records, kind, started, len(cfgs) - len(records)))
    reporter.info(f"done: {len(records)} phase(s) in {time.time() - started:.0f}s: {top}")
    return top

