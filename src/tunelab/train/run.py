"""One training run: config in, run folder out (one phase of `tunelab train`).

``train_run`` sees the whole run config and hands each component its own section. Set-up
happens in named steps, in order: the data is read and validated first (bad rows stop
the run before a model is loaded), then the model, tokenization, the run folder (created
only once all of that worked) and the optimizer; then the loop runs and the result is
saved. Phases (``tunelab.train.phased``) call it once per phase.

It knows nothing of evaluation tasks or of the terminal: a caller that wants evaluation
during training passes a hook factory (``tunelab.eval.during_training.eval_hook``), and
everything a person should see goes to the ``Reporter`` it is given.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.evaluation import with_task
from tunelab.config.loader import dump_config
from tunelab.config.schema import ADAPTER_METHODS, RunConfig
from tunelab.data.length import LengthReport, apply_length_policy
from tunelab.data.load import holdout_split, load_mixture, require_pairs
from tunelab.data.pairs import pair_length_policy, tokenize_pair
from tunelab.data.task import resolve_task, task_loader
from tunelab.data.template import (
    resolve_chat_template,
    resolve_tool_format,
    template_fingerprint,
    tokenize_example,
)
from tunelab.errors import DataError, TrainingError
from tunelab.files import (
    set_new_file_mode,
    sha256_file,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)
from tunelab.models import adapters
from tunelab.models.loading import load_causal_lm, load_tokenizer
from tunelab.models.resolve import resolve_model
from tunelab.tracking.loggers import RunLogger
from tunelab.tracking.reporter import SILENT, Progress, Reporter
from tunelab.tracking.run_dir import (
    create_run_dir,
    fingerprint_inputs,
    new_run_name,
)
from tunelab.train.checkpoint import (
    load_checkpoint,
    read_checkpoint_state,
    remove_strays,
    rotate,
    save_checkpoint,
    trainable_state,
)
from tunelab.train.distributed import SINGLE, World, barrier, init_world
from tunelab.train.fastpath import fast_training
from tunelab.train.loop import TOKEN_LOSS, Objective, TrainLoop, TrainResult, total_steps
from tunelab.train.preference import DpoObjective, setup_reference
from tunelab.train.ranks import NullSink, open_on_rank0, place_replicas, refuse_sharding
from tunelab.train.resume import CHECKPOINTS, find_resume_point, identity_changes, run_identity
from tunelab.train.schedule import build_scheduler, warmup_steps
from tunelab.train.signals import graceful_stop

TaskHookFactory = Callable[..., Callable[[int, dict[str, float]], bool]]
"""``(tasks, model_getter, tokenizer, chat_template, sink, total_steps, inner, reporter,
tool_format=...)`` -> an ``on_validation`` hook; see ``tunelab.eval.during_training.eval_hook``."""


@dataclass
class FinetuneRun:
    """Everything a run set up, kept for the steps after training."""

    cfg: RunConfig
    run_dir: Path = field(init=False)  # set when the run folder is opened (_open_run)
    model_path: Path | None = None
    tokenizer: Any = None
    model: Any = None
    new_token_ids: list[int] = field(default_factory=list)
    train_rows: list = field(default_factory=list)  # TokenizedExample; dpo: TokenizedPair, then ScoredPair
    val_rows: list = field(default_factory=list)
    length_report: dict = field(default_factory=dict)
    result: TrainResult | None = None  # set once the loop has run
    world: World = SINGLE
    reporter: Reporter = SILENT


@dataclass
class StartingPoint:
    """A model to train instead of loading ``cfg.model`` (the next phase of a phased run).

    ``model`` is ready for the phase's method (adapter attached, parameters frozen or
    not); the recipe trains it as it is.
    """

    model_path: Path
    tokenizer: Any
    model: Any
    new_token_ids: list[int] = field(default_factory=list)


def _setup_run_dir(run: FinetuneRun) -> None:
    cfg = run.cfg
    name = cfg.output.name or new_run_name(cfg.model.name)
    run.run_dir = create_run_dir(cfg.output.dir, name)
    write_text_atomic(run.run_dir / "config.yaml", dump_config(cfg))
    run.reporter.info(f"run folder: {run.run_dir}")


def load_base(cfg: RunConfig, reporter: Reporter = SILENT) -> StartingPoint:
    """The configured model and tokenizer, special tokens added, no method applied yet."""
    ms = cfg.model
    path = resolve_model(ms.name, reporter=reporter)
    tokenizer = load_tokenizer(path, trust_remote_code=ms.trust_remote_code)
    model = load_causal_lm(path, trust_remote_code=ms.trust_remote_code, dtype=ms.dtype)
    new_ids = adapters.add_special_tokens(model, tokenizer, ms.add_special_tokens)
    return StartingPoint(path, tokenizer, model, new_ids)


def apply_method(model: Any, cfg: RunConfig, new_token_ids: list[int]) -> Any:
    """Attach a LoRA adapter, freeze blocks, or unfreeze all, per ``cfg.train.method``."""
    method = cfg.train.method
    if method in ADAPTER_METHODS and cfg.model.adapter is not None:  # continue a trained adapter
        return adapters.load_lora(model, adapters.adapter_folder(cfg.model.adapter))
    if method in ADAPTER_METHODS:  # dpo trains a LoRA adapter too
        return adapters.apply_lora(model, cfg.lora, new_token_ids)
    if method == "freeze":
        adapters.apply_freeze(model, cfg.freeze)
        if new_token_ids:
            model.get_input_embeddings().weight.requires_grad_(True)
        return model
    return adapters.apply_full(model)


def _setup_model(run: FinetuneRun, start: StartingPoint | None = None) -> None:
    import torch

    ms, ts = run.cfg.model, run.cfg.train
    if ts.num_threads:
        torch.set_num_threads(ts.num_threads)
    torch.manual_seed(ts.seed)
    if start is None and run.world.is_main:
        run.reporter.info(f"loading model {ms.name}")
    base = start or load_base(run.cfg, run.reporter)
    run.model_path, run.tokenizer, run.model = base.model_path, base.tokenizer, base.model
    run.new_token_ids = list(base.new_token_ids)
    if ms.dtype == "bfloat16" and not _has_cuda():
        from tunelab.models.hardware import bf16_speedup

        if (x := bf16_speedup()) < 1.0 and run.world.is_main:
            run.reporter.warning(f"a bf16 matmul runs {1 / x:.1f}x slower than fp32 on this CPU (measured); "
                "`model.dtype: float32` (the default) trains faster")
    if ts.dropout is not None:
        adapters.set_dropout(run.model, ts.dropout)
    if start is None:  # a given starting point comes with its method applied
        run.model = apply_method(run.model, run.cfg, run.new_token_ids)
    n = adapters.count_parameters(run.model)
    if run.world.is_main:
        run.reporter.info(f"model: {ms.name} ({run.model_path}); method {ts.method}: "
            f"{n.trainable:,} of {n.total:,} parameters train ({n.percent:.2f}%)")


def _tokenize(run: FinetuneRun, examples: list, bar: Progress) -> tuple[list, LengthReport]:
    ds = run.cfg.data
    template = resolve_chat_template(run.tokenizer, ds.chat_template) if any(
        e.text is None for e in examples) else None
    if run.cfg.train.method == "dpo":  # both answers rendered as training renders a chat
        pairs = []
        for e in examples:
            pairs.append(tokenize_pair(run.tokenizer, e, template))
            bar.update(1)
        return pair_length_policy(pairs, ds.max_length, ds.overlength)
    rows = []
    tool_format = _tool_format(run)
    for e in examples:
        rows.append(tokenize_example(run.tokenizer, e, template, tool_format))
        bar.update(1)
    return apply_length_policy(rows, ds.max_length, ds.overlength)


def _load_examples(run: FinetuneRun) -> tuple[list, list]:
    """Read and validate every input file first: bad rows stop the run before any cost."""
    reporter = run.reporter if run.world.is_main else SILENT
    run.cfg, train_ex, val_ex = load_run_examples(run.cfg, reporter)
    if run.cfg.train.method == "dpo":
        require_pairs([*train_ex, *val_ex], "train.method dpo")
    reporter.info(f"read {len(train_ex) + len(val_ex)} rows: {len(train_ex)} for training, "
                  f"{len(val_ex)} for validation")
    return train_ex, val_ex


def load_run_examples(cfg: RunConfig, reporter: Reporter = SILENT) -> tuple[RunConfig, list, list]:
    """The examples a run of ``cfg`` trains and validates on, read as the run reads them.

    No model or tokenizer is loaded: the files are read, checked, mixed by weight, split
    (``data.validation_split``) and cut to ``data.train_rows``, exactly as ``train_run``
    does before it loads the model. With a task, each table is rendered through the task
    (``tunelab.data.task``) and the returned config keeps the task resolved (its text
    column and labels written out), so evaluation and serving ask the same prompt.

    Returns:
        ``(cfg with its task resolved, training examples, validation examples)``.

    Raises:
        DataError: a file is unreadable or holds rows the run cannot use.
        ConfigError: the task's labels clash, or a task source names a format.
    """
    ds, seed = cfg.data, cfg.train.seed
    files = len(ds.train) + len(ds.validation)
    reporter.info(f"reading data: {files} file{'s' * (files != 1)}")
    read = None
    if cfg.task is not None:
        task, label_set = resolve_task(cfg.task, [s.path for s in ds.train], reporter)
        cfg = cfg.model_copy(update={"task": task})
        own = {s.path: s.text_field for s in [*ds.train, *ds.validation] if s.text_field}
        read = task_loader(task, label_set, reporter, own)
        words = f" answering {', '.join(label_set.words)}" if label_set is not None else ""
        reporter.info(f"task: {task.type}, reading {task.text_field!r}{words}")
    train_ex = load_mixture([(s.path, s.format, s.weight) for s in ds.train], seed, reporter,
                            read)
    if ds.validation:
        val_ex = load_mixture([(s.path, s.format, s.weight) for s in ds.validation], seed,
                              reporter, read)
    else:
        train_ex, val_ex = holdout_split(train_ex, ds.validation_split, seed)
    if ds.train_rows is not None and ds.train_rows < len(train_ex):
        reporter.info(f"data.train_rows: training on a seeded random {ds.train_rows:,} of the "
                      f"{len(train_ex):,} training rows")
    if ds.train_rows is not None:
        train_ex = _first_rows(train_ex, ds.train_rows, seed, reporter)
    return cfg, train_ex, val_ex


def _first_rows(rows: list, n: int, seed: int, reporter: Reporter) -> list:
    """``data.train_rows``: a seeded random ``n`` of the rows, in their order.

    The rows are the first ``n`` of one seeded shuffle, so a smaller ``n`` keeps a
    subset of a larger one (the slices of ``tunelab data curve`` are nested).
    """
    if n >= len(rows):
        if n > len(rows):
            reporter.warning(f"data.train_rows is {n:,} but there are {len(rows):,} training "
                             "rows; training on all of them")
        return rows
    order = list(range(len(rows)))
    random.Random(f"tunelab.train_rows:{seed}").shuffle(order)
    return [rows[i] for i in sorted(order[:n])]


def _setup_data(run: FinetuneRun, train_ex: list, val_ex: list) -> None:
    bar = run.reporter.bar(total=len(train_ex) + len(val_ex), desc="tokenize", unit="row") \
        if run.world.is_main else Progress()
    with bar:
        run.train_rows, train_rep = _tokenize(run, train_ex, bar)
        run.val_rows, val_rep = _tokenize(run, val_ex, bar) if val_ex else ([], None)
    run.length_report = {"train": train_rep.as_dict(), "validation": val_rep.as_dict() if val_rep else None}
    for split, rep in (("train", train_rep), ("validation", val_rep)):
        if rep is not None and (rep.dropped or rep.truncated or rep.no_loss_tokens):
            run.reporter.warning(f"{split}: {rep.dropped} row(s) dropped and {rep.truncated} truncated "
                f"(longer than {rep.max_length} tokens, policy {rep.policy}); "
                f"{rep.no_loss_tokens} without answer tokens set aside")
    n_tok = sum(len(r) for r in run.train_rows)
    if run.world.is_main:
        run.reporter.info(f"data: {len(run.train_rows)} training rows ({n_tok:,} tokens), "
            f"{len(run.val_rows)} validation rows")


def _write_inputs(run: FinetuneRun, hashes: list[dict]) -> None:
    write_json_atomic(run.run_dir / "inputs.json", {
        "model": {"name": run.cfg.model.name, "path": str(run.model_path)},
        "files": hashes,
        # The chat rendering training used: `tunelab serve` refuses a run whose template
        # it would render differently (train/serve template drift).
        "chat_template_fingerprint": _template_fingerprint(run),
        # How tools were rendered (template or fallback): evaluation and serving read it.
        "tool_format": _tool_format(run),
        **({"adapter": adapter_input(run.cfg.model.adapter)} if run.cfg.model.adapter else {}),
    })


def adapter_input(ref: str) -> dict:
    """The starting adapter as a run records it: its folder and its weights' sha256."""
    folder = adapters.adapter_folder(ref)
    weights = sorted(folder.glob("*.safetensors"))
    return {"path": str(folder), "sha256": [sha256_file(w) for w in weights]}


def _template_fingerprint(run: FinetuneRun) -> str | None:
    try:
        return template_fingerprint(run.tokenizer, run.cfg.data.chat_template)
    except DataError:
        return None  # no chat template: the run trains on plain text


def _tool_format(run: FinetuneRun) -> str | None:
    """The run's tool rendering, ``data.tool_format`` resolved for its template."""
    try:
        template = resolve_chat_template(run.tokenizer, run.cfg.data.chat_template)
    except DataError:
        return None  # no chat template: the run trains on plain text
    return resolve_tool_format(run.tokenizer, template, run.cfg.data.tool_format)


def _setup_optimizer(run: FinetuneRun, steps: int) -> tuple[Any, Any]:
    import torch

    ts = run.cfg.train
    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, p in run.model.named_parameters():
        if p.requires_grad:
            # Biases and norms are not decayed: decay there only shrinks scale parameters.
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": ts.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=ts.learning_rate)
    warm = warmup_steps(steps, ts.warmup_steps, ts.warmup_ratio)
    return opt, build_scheduler(opt, ts.lr_scheduler, steps, warm, ts.num_cycles)


def _save_result(run: FinetuneRun) -> str:
    """Save the adapter or the weights, and the tokenizer; returns the artifact kind."""
    out = run.run_dir
    if run.cfg.train.method in ADAPTER_METHODS:
        run.model.save_pretrained(out / "adapter", safe_serialization=True)
        kind = "adapter"
    else:
        run.model.save_pretrained(out / "model", safe_serialization=True)
        kind = "model"
    run.tokenizer.save_pretrained(out / "tokenizer")
    set_new_file_mode(out / kind)  # safetensors writes its files 0600
    return kind


def _save_best(run: FinetuneRun, step: int) -> None:
    """Keep the best weights on disk (not in memory), so they survive a crash."""
    from safetensors.torch import save_file

    state = trainable_state(run.model)
    write_atomic(run.run_dir / "best" / "weights.safetensors",
                 lambda tmp: save_file(state, str(tmp), metadata={"step": str(step)}))


def _restore_best(run: FinetuneRun) -> None:
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(run.run_dir / "best" / "weights.safetensors"))
    params = dict(run.model.named_parameters())
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)


def _open_run(run: FinetuneRun, resume: str | None) -> Path | None:
    """Create the run folder, or find the one to resume; returns the checkpoint, if any."""
    found = find_resume_point(run.cfg, resume) if resume else None
    if found is None:
        if resume == "auto":
            run.reporter.info("resume auto: no unfinished run with a checkpoint; starting a new run")
        _setup_run_dir(run)
        return None
    run.run_dir, ckpt = found
    removed = remove_strays(run.run_dir / CHECKPOINTS)
    if removed:
        run.reporter.info(f"removed unfinished checkpoint folders: {', '.join(removed)}")
    return ckpt


def _check_identity(saved: dict, now: dict, force: bool, reporter: Reporter) -> list[str]:
    """The changed fields (allowed only when forced).

    Raises:
        TrainingError: settings changed and ``force`` is false.
    """
    changes = identity_changes(saved, now)
    if not changes:
        return []
    if not force:
        raise TrainingError(
            "the run cannot resume with changed settings:\n" + "\n".join(f"  - {c}" for c in changes),
            hint="restore the original settings, start a new run, or pass --force-resume",
        )
    reporter.warning("resuming with changed settings (--force-resume): " + "; ".join(changes))
    return changes


def run_finetune(cfg: RunConfig, reporter: Reporter = SILENT, resume: str | None = None,
                 force_resume: bool = False) -> Path:
    """Train per ``cfg`` and write a complete run folder.

    Args:
        cfg: the validated run config.
        reporter: where progress lines, warnings and the progress bar go.
        resume: None (a new run), ``auto`` or a run/checkpoint folder to continue.
        force_resume: resume even when model, data, batch, accumulation or seed changed.

    Returns:
        The run folder. A run stopped by a signal returns with a checkpoint and
        without ``summary.json``.

    Raises:
        TunelabError: any problem with the model, the data or training.
    """
    return train_run(cfg, reporter, resume, force_resume).run_dir


def train_run(cfg: RunConfig, reporter: Reporter = SILENT, resume: str | None = None,
              force_resume: bool = False,
              on_validation: Callable[[int, dict[str, float]], bool] | None = None,
              start: StartingPoint | None = None,
              task_hook: TaskHookFactory | None = None) -> FinetuneRun:
    """Train per ``cfg``, write the run folder, and keep what was trained in memory.

    Args:
        cfg, reporter, resume, force_resume: as for ``run_finetune``.
        on_validation: told (step, validation metrics) after each validation; True stops
            training early (``summary.json`` records ``stopped_by_hook``): search pruning.
        start: train this model instead of loading ``cfg.model`` (a phase's hand-over).
        task_hook: builds the hook that runs ``cfg.eval_tasks`` at validations (the
            recipes pass ``tunelab.eval.during_training.eval_hook``); required when the
            config lists eval_tasks.

    Returns:
        The run, with ``run_dir``, the trained (unwrapped) ``model`` and the loop
        ``result``. Under several processes only rank 0 writes files.

    Raises:
        TunelabError: any problem with the model, the data or training.
    """
    from accelerate import Accelerator

    started = time.time()
    run = FinetuneRun(cfg, world=init_world(_has_cuda()), reporter=reporter)
    if run.world.distributed:
        refuse_sharding()
    main = run.world.is_main
    train_ex, val_ex = _load_examples(run)
    _setup_model(run, start)
    _setup_data(run, train_ex, val_ex)
    def open_here() -> tuple[Path | None, Path]:
        ckpt = _open_run(run, resume)  # sets run.run_dir
        return ckpt, run.run_dir

    # Only once the model loads and the data tokenizes; rank 0 opens it, the others are told.
    run.run_dir, ckpt = open_on_rank0(run.world, open_here)
    hashes = fingerprint_inputs([s.path for s in [*cfg.data.train, *cfg.data.validation]])
    if ckpt is None and main:
        _write_inputs(run, hashes)
    identity = run_identity(cfg, hashes)
    if cfg.model.adapter:  # a resumed run must continue from the same starting weights
        identity["adapter"] = adapter_input(cfg.model.adapter)["sha256"]
    steps = total_steps(len(run.train_rows), cfg.train)
    optimizer, scheduler = _setup_optimizer(run, steps)
    accelerator = Accelerator(cpu=not _has_cuda(), mixed_precision="no")
    if run.world.distributed:  # no DDP wrapper: the loop sums gradients itself (exact)
        place_replicas(run.model, accelerator.device, run.world, run.cfg.train, reporter)
    else:
        run.model, optimizer = accelerator.prepare(run.model, optimizer)
    objective: Objective = TOKEN_LOSS
    if cfg.train.method == "dpo":  # before a checkpoint loads: the reference is the start
        objective = _setup_dpo(run, accelerator.device)
    state = read_checkpoint_state(ckpt) if ckpt is not None else None
    forced = _check_identity(state["identity"], identity, force_resume, reporter) if state else []
    if ckpt is not None:
        state = load_checkpoint(ckpt, run.model, optimizer, scheduler)
    logger = RunLogger(run.run_dir, resume_step=state["result"]["steps"] if state else None) \
        if main else NullSink()
    if forced:
        logger.log_event("forced_resume", {"changes": forced})
    if ckpt is not None and main:  # resuming: state is that checkpoint's
        run.reporter.info(f"resuming {run.run_dir.name} from {ckpt.name}")

    def on_best(step: int) -> None:
        if cfg.train.keep_best and main:
            _save_best(run, step)

    def on_checkpoint(step: int, loop_state: dict) -> None:
        root = run.run_dir / CHECKPOINTS
        try:
            save_checkpoint(root, step, run.model, optimizer, scheduler,
                            {**loop_state, "identity": identity})
        except OSError as e:
            # A full disk fails this save only; the earlier checkpoints stay intact.
            run.reporter.warning(f"checkpoint at step {step} failed ({e}); the previous one is kept")
            return
        rotate(root, cfg.train.keep_last)

    if cfg.eval_tasks and main and not run.world.distributed:
        # Optional: `eval_tasks` run at validations and log to metrics.jsonl.
        if task_hook is None:
            raise TrainingError("the config lists eval_tasks, but this caller of train_run "
                                "gave no task_hook to run them",
                                hint="remove eval_tasks, or train with `tunelab train`")
        tasks = cfg.eval_tasks
        if run.cfg.task is not None:  # evaluated with the prompt the run trains on
            tasks = [with_task(t, run.cfg.task) for t in tasks]
        on_validation = task_hook(tasks, lambda: run.model, run.tokenizer,
                                  cfg.data.chat_template, logger, steps, on_validation,
                                  reporter, tool_format=_tool_format(run))
    elif cfg.eval_tasks and main:
        run.reporter.warning("eval_tasks are skipped when training on several processes")
    with graceful_stop(reporter.warning) as stop_flag:
        loop = TrainLoop(run.model, optimizer, scheduler, accelerator, run.train_rows, run.val_rows,
                         cfg.train, run.tokenizer.pad_token_id, logger, on_best,
                         progress=reporter.bar if main else None,
                         on_checkpoint=on_checkpoint if main else None,
                         save_every=cfg.train.save_every, should_stop=stop_flag,
                         on_validation=on_validation, world=run.world, objective=objective)
        try:
            result = run.result = loop.run(resume=state)
        finally:
            logger.close()
    if result.interrupted:
        if main:
            run.reporter.info(f"stopped at step {result.steps} by {stop_flag.signal_name or 'another process'}; "
                f"a checkpoint is saved. Continue with: tunelab train CONFIG --resume {run.run_dir}")
        return run
    run.model = accelerator.unwrap_model(run.model)
    used_best = bool(cfg.train.keep_best and result.best_step is not None
                     and result.best_step != result.steps)
    if used_best:
        barrier(run.world)  # rank 0 has written best/ before any rank reads it
        _restore_best(run)
        if main:
            run.reporter.info(f"keep-best: restored the weights of step {result.best_step} "
                f"(validation loss {result.best_val_loss:.4f})")
    if not main:
        return run
    kind = _save_result(run)
    write_json_atomic(run.run_dir / "summary.json", _summary(run, result, kind, used_best, started))
    run.reporter.info(f"done in {time.time() - started:.0f}s: {run.run_dir}")
    return run


def _setup_dpo(run: FinetuneRun, device: Any) -> Objective:
    """The DPO objective, with every pair's reference log-probs read back or computed once.

    The reference runs on the training forward (packed rows, fused LoRA; exact rewrites
    within 1e-5), so step 1 computes the policy as the reference was computed, and the
    pass is faster than padded batches (on SmolLM2-135M, 2 CPU cores: 13 s instead of
    17 s for 64 HH-RLHF pairs).
    """
    ts = run.cfg.train
    with fast_training(run.model, packing=ts.packing, fused_lora=ts.fused_lora) as fp:
        scored = setup_reference(run.model, {"train": run.train_rows, "validation": run.val_rows},
                                 ts.batch_size, run.tokenizer.pad_token_id, device,
                                 run.run_dir, run.world.is_main,
                                 run.reporter if run.world.is_main else SILENT, fp.packing)
    run.train_rows, run.val_rows = scored["train"], scored["validation"]
    return DpoObjective(run.cfg.train.dpo)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""


def _summary(run: FinetuneRun, r: TrainResult, kind: str, used_best: bool, started: float) -> dict:
    return {
        "status": "complete",
        "model": run.cfg.model.name,
        "model_path": str(run.model_path),
        "method": run.cfg.train.method,
        "artifact": kind,
        "steps": r.steps,
        "epochs": round(r.epochs_completed, 4),
        "train_loss": r.train_loss,
        "first_step_loss": r.step_losses[0] if r.step_losses else None,
        "initial_val_loss": r.initial_val_loss,
        "final_val_loss": r.validations[-1]["loss"] if r.validations else None,
        "best_val_loss": r.best_val_loss,
        "best_step": r.best_step,
        "weights_from_step": r.best_step if used_best else r.steps,
        "stopped_early": r.stopped_early,
        "stopped_by_hook": r.stopped_by_hook,
        "train_rows": len(run.train_rows),
        "validation_rows": len(run.val_rows),
        "train_tokens": r.train_tokens,
        "train_seconds": round(r.train_seconds, 2),
        "tokens_per_second": round(r.tokens_per_second, 1),
        "length_policy": run.length_report,
        "added_special_tokens": run.cfg.model.add_special_tokens,
        "wall_seconds": round(time.time() - started, 1),
        **({"preference": _preference_summary(r)} if run.cfg.train.method == "dpo" else {}),
    }


def _preference_summary(r: TrainResult) -> dict:
    """The last validation's rewards (dpo runs); at the start they are 0 by definition."""
    keys = ("reward_margin", "reward_accuracy", "rewards_chosen", "rewards_rejected")
    return {"final_validation": {k: r.validations[-1][k] for k in keys} if r.validations else None}
