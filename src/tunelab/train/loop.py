"""The training loop: steps, validation, early stopping, keep-best.

The loop receives a prepared model, its optimizer and schedule, the tokenized rows and
the training settings; it knows nothing of files, configs or the CLI. What it observes
goes to a ``MetricSink`` (the run folder's loggers, a progress bar). What a step
minimizes is an ``Objective``: the answer-token cross-entropy (``TOKEN_LOSS``) unless
the caller passes another (``tunelab.train.preference.DpoObjective``); the steps,
accumulation, checkpoints, resume, stop signals and early stopping are the same for all.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from tunelab.config.schema import TrainSettings
from tunelab.data.template import TokenizedExample
from tunelab.errors import TrainingError
from tunelab.train.batching import batch, iter_steps, steps_per_epoch
from tunelab.train.distributed import (
    SINGLE,
    World,
    all_reduce_grads,
    all_reduce_sum,
    any_rank,
    broadcast_object,
    gather_objects,
    interleave,
)
from tunelab.train.fastpath import FastPath, fast_training, is_packed
from tunelab.train.loss import batch_loss_sum


class MetricSink(Protocol):
    def log(self, split: str, step: int, metrics: dict[str, float]) -> None: ...


class Objective(Protocol):
    """What a training step minimizes, over rows of one kind.

    A step's loss is the sum of ``loss_sum`` over its micro-batches divided by the sum of
    ``count`` (answer tokens, or pairs), so it does not depend on how a step is split.
    """

    count_name: str  # what ``count`` counts, as the train metric's name ("loss_tokens")
    sums: tuple[str, ...]  # the extra metrics ``loss_sum`` returns as sums, in this order

    def batch(self, rows: Sequence[Any], row_ids: list[int], pad_id: int, packed: bool) -> Any:
        """One micro-batch of ``rows`` (with ``row_ids``, ``num_tokens``)."""
        ...

    def count(self, mb: Any) -> int:
        """What the step mean divides by, for this micro-batch (known before the forward)."""
        ...

    def loss_sum(self, model: Any, mb: Any, device: Any) -> tuple[torch.Tensor, int, dict[str, float]]:
        """(summed loss with grad, ``count``, the sums named in ``sums``)."""
        ...

    def evaluate(self, model: Any, rows: Sequence[Any], batch_size: int, pad_id: int,
                 device: torch.device, world: World = SINGLE, progress: Callable | None = None,
                 desc: str = "validate") -> dict[str, float]:
        """Validation metrics of ``rows``, ``loss`` among them (early stopping reads it)."""
        ...


class TokenLoss:
    """Supervised fine-tuning: cross-entropy over answer tokens (``tunelab.train.loss``)."""

    count_name = "loss_tokens"
    sums: tuple[str, ...] = ("token_accuracy",)  # correct next-token predictions; / count = the accuracy

    def batch(self, rows: Sequence[Any], row_ids: list[int], pad_id: int, packed: bool) -> Any:
        return batch(rows, row_ids, pad_id, packed)

    def count(self, mb: Any) -> int:
        return mb.num_loss_tokens

    def loss_sum(self, model: Any, mb: Any, device: Any) -> tuple[torch.Tensor, int, dict[str, float]]:
        s, n, c = batch_loss_sum(model, mb, device)
        return s, n, {"token_accuracy": float(c)}

    def evaluate(self, model: Any, rows: Sequence[Any], batch_size: int, pad_id: int,
                 device: torch.device, world: World = SINGLE, progress: Callable | None = None,
                 desc: str = "validate") -> dict[str, float]:
        return evaluate_loss(model, rows, batch_size, pad_id, device, world, progress, desc)


TOKEN_LOSS = TokenLoss()


@dataclass
class TrainResult:
    """What a finished loop reports."""

    steps: int
    epochs_completed: float
    train_loss: float  # mean loss of the last logged window
    train_tokens: int
    train_seconds: float
    tokens_per_second: float
    initial_val_loss: float | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    interrupted: bool = False  # stopped by a signal; a checkpoint holds the state
    stopped_by_hook: bool = False  # on_validation asked to stop (e.g. a pruned search trial)
    validations: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)


def total_steps(num_rows: int, settings: TrainSettings) -> int:
    """Optimizer steps of the whole run (max_steps wins over epochs)."""
    if settings.max_steps is not None:
        return settings.max_steps
    spe = steps_per_epoch(num_rows, settings.batch_size, settings.gradient_accumulation_steps)
    return max(1, math.ceil(spe * settings.epochs))


@torch.inference_mode()
def evaluate_loss(model: Any, rows: Sequence[TokenizedExample], batch_size: int, pad_id: int,
                  device: torch.device, world: World = SINGLE, progress: Callable | None = None,
                  desc: str = "validate") -> dict[str, float]:
    """Loss, perplexity and next-token accuracy over answer tokens of ``rows``.

    Batches are evaluated one at a time and only sums are kept: no logits accumulate.
    Inside ``fast_training`` with packing on, the rows of a batch are packed.
    With several processes each evaluates every ``world.size``-th row and the sums are
    all-reduced, so every rank gets the same numbers. ``progress`` (a ``Reporter.bar``)
    gets a bar ``desc`` over this rank's batches.
    """
    was_training = model.training
    model.eval()
    loss_sum, tokens, correct = 0.0, 0.0, 0.0  # float: all_reduce_sum gives float64 sums
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # less padding
    order = order[world.rank::world.size]
    packed = is_packed(model)
    bar = progress(total=math.ceil(len(order) / batch_size), desc=desc, unit="batch") \
        if progress else None
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        mb = batch([rows[i] for i in idx], idx, pad_id, packed)
        s, n, c = batch_loss_sum(model, mb, device)
        loss_sum += float(s)
        tokens += n
        correct += c
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model.train(was_training)
    if world.distributed:
        loss_sum, tokens, correct = all_reduce_sum([loss_sum, tokens, correct], world)
    loss = loss_sum / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "token_accuracy": correct / max(tokens, 1), "tokens": float(tokens)}


class TrainLoop:
    """One training run over prepared parts.

    Args:
        model: the (possibly peft-wrapped) model, on the accelerator's device.
        optimizer: its optimizer.
        scheduler: the LR schedule, stepped once per optimizer step.
        accelerator: an ``accelerate.Accelerator`` (device placement, backward, clipping).
        train_rows, val_rows: tokenized examples.
        settings: the train section of the config.
        pad_id: the padding token id.
        sink: where metrics go.
        on_best: called with the step when validation loss improves (keep-best).
        progress: a tqdm-like factory, or None for silence.
        on_checkpoint: called with (step, state) every ``save_every`` steps and when
            ``should_stop`` turns true; ``state`` is what ``run(resume=...)`` takes back.
        should_stop: polled after every step (a signal handler's flag).
        on_validation: called with (step, metrics) after each validation during training
            and the last one; True asks training to stop (ignored after the last step).
        world: this process's rank among data-parallel processes (see
            ``tunelab.train.distributed``); the sink, checkpoints and ``on_best`` of
            ranks other than 0 should write nothing.
        objective: what a step minimizes over the rows (``TOKEN_LOSS``: supervised).
    """

    def __init__(self, model: Any, optimizer: Any, scheduler: Any, accelerator: Any,
                 train_rows: Sequence[Any], val_rows: Sequence[Any],
                 settings: TrainSettings, pad_id: int, sink: MetricSink,
                 on_best: Callable[[int], None] | None = None, progress: Callable | None = None,
                 on_checkpoint: Callable[[int, dict], None] | None = None, save_every: int = 0,
                 should_stop: Callable[[], bool] | None = None,
                 on_validation: Callable[[int, dict[str, float]], bool] | None = None,
                 world: World = SINGLE, objective: Objective = TOKEN_LOSS) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.accelerator = accelerator
        self.train_rows = train_rows
        self.val_rows = val_rows
        self.settings = settings
        self.pad_id = pad_id
        self.sink = sink
        self.on_best = on_best
        self.progress = progress
        self.on_checkpoint = on_checkpoint
        self.save_every = save_every
        self.should_stop = should_stop
        self.on_validation = on_validation
        self.world = world
        self.objective = objective
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fast_path: FastPath | None = None  # set by run()

    def _optimizer_step(self, micro_batches: list, step: int) -> dict[str, float]:
        """Forward/backward every micro-batch of a step, then one optimizer update."""
        dev = self.accelerator.device
        obj = self.objective
        step_tokens = sum(obj.count(mb) for mb in micro_batches)
        if self.world.distributed:  # the global count: each rank's share of the step mean
            step_tokens = int(all_reduce_sum([step_tokens], self.world)[0])
        loss_total = 0.0  # float: all_reduce_sum gives float64 sums
        sums = dict.fromkeys(obj.sums, 0.0)
        for mb in micro_batches:
            s, n, extra = obj.loss_sum(self.model, mb, dev)
            if n == 0:
                continue
            part = s / step_tokens  # each micro-batch adds its share of the step mean
            self.accelerator.backward(part)
            loss_total += float(part.detach())
            for key in obj.sums:
                sums[key] += extra[key]
        tokens: float = sum(mb.num_tokens for mb in micro_batches)
        rows = [i for mb in micro_batches for i in mb.row_ids]
        if self.world.distributed:
            loss_total, tokens, *summed = all_reduce_sum([loss_total, tokens, *sums.values()],
                                                         self.world)
            sums = dict(zip(obj.sums, summed, strict=True))
            all_reduce_grads(self.params, self.world)
            rows = interleave(gather_objects(rows, self.world))
        if step_tokens and not math.isfinite(loss_total):
            raise TrainingError(
                f"the loss became {loss_total} at step {step}",
                hint="lower train.learning_rate, or set train.max_grad_norm",
            )
        grad_norm = float("nan")
        if self.settings.max_grad_norm is not None and step_tokens:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.params, self.settings.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss_total, obj.count_name: float(step_tokens), "grad_norm": grad_norm,
                "rows_crc32": zlib.crc32(",".join(map(str, rows)).encode()),  # which rows, in order
                "tokens": float(tokens),
                **{key: value / max(step_tokens, 1) for key, value in sums.items()}}

    def _hook_stops(self, step: int, metrics: dict[str, float], final: bool) -> bool:
        """Tell ``on_validation``; True when it asks to stop (rank 0 decides for all)."""
        if self.on_validation is None:
            return False
        stop = bool(self.on_validation(step, dict(metrics)))
        stop = bool(broadcast_object(stop, self.world))
        return stop and not final

    def _validate(self, step: int, result: TrainResult, final: bool = False) -> bool:
        """Run validation; returns True when training should stop early.

        Validation, keep-best and the hook (evaluation tasks) see the model as the library
        computes it, not the fast path's rewrites (see ``FastPath.suspended``).
        """
        assert self.fast_path is not None  # run() sets it before calling _run
        with self.fast_path.suspended():
            return self._validate_unpatched(step, result, final)

    def _validate_unpatched(self, step: int, result: TrainResult, final: bool) -> bool:
        if not self.val_rows:
            return False
        metrics = self.objective.evaluate(self.model, self.val_rows, self.settings.batch_size,
                                          self.pad_id, self.accelerator.device, self.world,
                                          self.progress)
        metrics["step"] = step
        result.validations.append(metrics)
        self.sink.log("validation", step, metrics)
        improved = result.best_val_loss is None or metrics["loss"] < result.best_val_loss
        if improved:
            result.best_val_loss, result.best_step = metrics["loss"], step
            if self.on_best is not None:
                self.on_best(step)
        if self._hook_stops(step, metrics, final):
            result.stopped_by_hook = True
            return True
        if improved:
            return False
        patience = self.settings.early_stopping_patience
        since_best = sum(1 for v in result.validations if v["step"] > result.best_step)
        return patience is not None and since_best >= patience

    def run(self, resume: dict | None = None) -> TrainResult:
        """Train to the end, to early stopping, or until ``should_stop`` says so.

        Training steps run on the fast path (``tunelab.train.fastpath``) as the settings
        allow; ``self.fast_path`` tells what was on. Validation and ``on_validation`` run
        with the fast path suspended, on padded batches.

        Args:
            resume: the ``state`` of a checkpoint (see ``result_state``); the loop goes on
                from its step with the same rows in the same order.
        """
        s = self.settings
        with fast_training(self.model, packing=s.packing, fused_lora=s.fused_lora) as fp:
            self.fast_path = fp
            return self._run(resume)

    def _run(self, resume: dict | None) -> TrainResult:
        s = self.settings
        n_rows = len(self.train_rows)
        if n_rows == 0:
            raise TrainingError("no training rows are left after tokenization",
                                hint="check data.max_length and data.overlength")
        total = total_steps(n_rows, s)
        spe = steps_per_epoch(n_rows, s.batch_size, s.gradient_accumulation_steps)
        result = TrainResult(0, 0.0, float("nan"), 0, 0.0, 0.0)
        if resume is not None:
            result = TrainResult(**resume["result"])
        self.model.train()
        if resume is None and s.eval_at_start and self.val_rows:
            # The baseline: logged, but not a candidate for keep-best or patience.
            assert self.fast_path is not None  # run() sets it before calling _run
            with self.fast_path.suspended():
                start = self.objective.evaluate(self.model, self.val_rows, s.batch_size,
                                                self.pad_id, self.accelerator.device, self.world,
                                                self.progress, desc="validate (start)")
                result.initial_val_loss = start["loss"]
                self.sink.log("validation", 0, {**start, "step": 0})
        # Opened after the start validation, so its clock times training steps only.
        bar = self.progress(total=total, initial=result.steps, desc="train", unit="step") \
            if self.progress else None
        t0 = time.perf_counter() - result.train_seconds
        step = result.steps
        window: list[float] = list(resume["window"]) if resume else []
        stop = result.stopped_early
        assert self.fast_path is not None  # run() sets it before calling _run
        while step < total and not stop and not result.interrupted:
            epoch, in_epoch = divmod(step, spe)
            for micro in iter_steps(self.train_rows, s.batch_size, s.gradient_accumulation_steps,
                                    s.seed, epoch, self.pad_id, s.group_by_length, start_step=in_epoch,
                                    rank=self.world.rank, world_size=self.world.size,
                                    packed=self.fast_path.packing,
                                    make_batch=self.objective.batch):
                m = self._optimizer_step(micro, step + 1)
                step += 1
                result.steps = step
                result.train_tokens += int(m["tokens"])
                result.step_losses.append(m["loss"])
                window.append(m["loss"])
                elapsed = time.perf_counter() - t0
                if step % s.log_every == 0 or step == total:
                    m.update(lr=self.scheduler.get_last_lr()[0], epoch=step / spe,
                             tokens_per_second=result.train_tokens / max(elapsed, 1e-9))
                    self.sink.log("train", step, m)
                    result.train_loss = sum(window) / len(window)
                    window = []
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                                    tok_s=f"{result.train_tokens / max(elapsed, 1e-9):.0f}")
                if s.eval_every and step % s.eval_every == 0 and step < total:
                    stop = self._validate(step, result)
                    result.stopped_early = stop
                result.train_seconds = time.perf_counter() - t0
                interrupted = self.should_stop is not None and self.should_stop()
                if self.world.distributed:  # a signal may reach one rank only: all stop together
                    interrupted = any_rank(interrupted, self.world)
                saving = self.save_every and step % self.save_every == 0 and step < total
                if self.on_checkpoint is not None and (saving or (interrupted and step < total)):
                    self.on_checkpoint(step, {"result": asdict(result), "window": window})
                if interrupted and step < total:
                    result.interrupted = True
                if step >= total or stop or result.interrupted:
                    break
        if not stop and not result.interrupted:
            self._validate(step, result, final=True)
        if bar is not None:
            bar.close()
        result.epochs_completed = step / spe
        result.train_seconds = time.perf_counter() - t0
        result.tokens_per_second = result.train_tokens / max(result.train_seconds, 1e-9)
        if window:
            result.train_loss = sum(window) / len(window)
        return result
