"""Preference tuning (DPO): the loss, the reference log-probabilities, and the margin.

A pair's log-probability under a model is the sum over its answer tokens (the labels
``tunelab.data.pairs.tokenize_pair`` sets; the prompt is masked) of log p(token). DPO
minimizes ``-log sigmoid(beta * ((pc - rc) - (pr - rr)))`` with ``pc``/``pr`` the policy's
log-probabilities of the chosen/rejected answer and ``rc``/``rr`` the reference model's
(``dpo_loss``; TRL's ``sigmoid`` loss, checked against TRL's trainer in the tests).

The reference is the model as training starts, computed once before the first step
(``reference_logps``) in eval mode: no second model is kept in memory. With a new LoRA
adapter (B = 0) that is exactly the model with its adapter disabled; with an adapter
handed over from an earlier phase it is that adapter, the model being improved. The
values are stored in the run folder (``REFERENCE``), so a resumed run reads them back
instead of recomputing them from a model that has trained since.

``DpoObjective`` is what ``TrainLoop`` minimizes for ``train.method: dpo``: the loop's
steps, accumulation, checkpoints, resume, signals and early stopping are unchanged.
``preference_margin`` scores a model (or adapter) on held-out pairs, for other commands.
This module knows nothing of configs beyond ``DpoSettings``, nor of the CLI.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.config.schema import DEFAULT_MAX_LENGTH, DpoSettings
from tunelab.data.example import Example
from tunelab.data.pairs import TokenizedPair, tokenize_pair
from tunelab.data.template import IGNORE_INDEX, resolve_chat_template
from tunelab.errors import TrainingError
from tunelab.files import write_json_atomic
from tunelab.tracking.reporter import SILENT, Reporter
from tunelab.train.batching import MicroBatch, batch
from tunelab.train.distributed import SINGLE, World, all_reduce_sum
from tunelab.train.fastpath import is_packed
from tunelab.train.loss import answer_hidden

REFERENCE = "reference_logps.json"  # in the run folder: the reference log-probs of every pair


@dataclass
class ScoredPair:
    """A tokenized pair with its reference log-probabilities (what a DPO step reads)."""

    pair: TokenizedPair
    ref_chosen: float
    ref_rejected: float

    def __len__(self) -> int:  # for length grouping
        return len(self.pair)


@dataclass
class PairBatch:
    """The two sides of some pairs as one micro-batch: chosen rows first, then rejected."""

    sequences: MicroBatch
    ref_chosen: torch.Tensor  # (pairs,)
    ref_rejected: torch.Tensor
    row_ids: list[int]  # the pairs' indices, for exact-resume checks

    @property
    def num_pairs(self) -> int:
        return len(self.row_ids)

    @property
    def num_tokens(self) -> int:
        return self.sequences.num_tokens


def pair_batch(rows: Sequence[ScoredPair | TokenizedPair], row_ids: list[int], pad_id: int,
               packed: bool) -> PairBatch:
    """Pack or pad the chosen then the rejected sequences of ``rows`` into one micro-batch.

    Rows without reference values (``TokenizedPair``) get 0: only reference passes use them.
    """
    pairs = [r.pair if isinstance(r, ScoredPair) else r for r in rows]
    seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    refs = [(r.ref_chosen, r.ref_rejected) if isinstance(r, ScoredPair) else (0.0, 0.0)
            for r in rows]
    ref = torch.tensor(refs, dtype=torch.float32).reshape(len(rows), 2)
    return PairBatch(batch(seqs, list(range(len(seqs))), pad_id, packed), ref[:, 0], ref[:, 1],
                     list(row_ids))


def sequence_logps(model: Any, mb: MicroBatch, device: Any = None) -> torch.Tensor:
    """The summed log-probability of each row's answer tokens, shape (rows,), float32.

    The head runs only at answer positions (``loss.answer_hidden``); a packed row is
    told apart by its boundaries (``cu_seqlens``).
    """
    inputs = mb.model_inputs(device)
    ids = inputs.pop("input_ids")
    mask = inputs.pop("attention_mask", None)
    labels = mb.labels if device is None else mb.labels.to(device)
    head, hidden, targets = answer_hidden(model, ids, mask, labels, **inputs)
    logits = hidden if head is None else head(hidden)
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    keep = labels[:, 1:] != IGNORE_INDEX
    if mb.packed:
        assert mb.cu_seqlens is not None  # packed batches carry their boundaries
        rows = len(mb.cu_seqlens) - 1
        positions = torch.arange(keep.shape[1], device=keep.device)
        row_of = torch.bucketize(positions, mb.cu_seqlens[1:].to(keep.device), right=True)[None]
    else:
        rows = keep.shape[0]
        row_of = torch.arange(rows, device=keep.device)[:, None].expand_as(keep)
    out = torch.zeros(rows, dtype=torch.float32, device=token_logps.device)
    return out.index_add(0, row_of[keep].to(token_logps.device), token_logps)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO (sigmoid) loss of each pair, and the implicit rewards.

    Args:
        policy_chosen, policy_rejected: summed answer log-probs under the trained model.
        ref_chosen, ref_rejected: the same under the reference model.
        beta: ``train.dpo.beta``.

    Returns:
        (loss per pair, ``beta * (pc - rc)``, ``beta * (pr - rr)``); the rewards are detached.
    """
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return losses, beta * chosen.detach(), beta * rejected.detach()


def _reward_sums(rc: torch.Tensor, rr: torch.Tensor) -> dict[str, float]:
    return {"rewards_chosen": float(rc.sum()), "rewards_rejected": float(rr.sum()),
            "reward_margin": float((rc - rr).sum()), "reward_accuracy": float((rc > rr).sum())}


class DpoObjective:
    """``TrainLoop``'s objective for preference pairs (rows are ``ScoredPair``).

    A step's loss is the mean DPO loss of its pairs; the train metrics add the mean
    rewards of each side, their margin and the share of pairs whose chosen reward is
    higher (TRL's ``rewards/*`` metrics).
    """

    count_name = "pairs"
    sums: tuple[str, ...] = ("rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy")

    def __init__(self, settings: DpoSettings) -> None:
        self.beta = settings.beta

    def batch(self, rows: Sequence[Any], row_ids: list[int], pad_id: int, packed: bool) -> PairBatch:
        return pair_batch(rows, row_ids, pad_id, packed)

    def count(self, mb: PairBatch) -> int:
        return mb.num_pairs

    def loss_sum(self, model: Any, mb: PairBatch,
                 device: Any) -> tuple[torch.Tensor, int, dict[str, float]]:
        n = mb.num_pairs
        logps = sequence_logps(model, mb.sequences, device)
        losses, rc, rr = dpo_loss(logps[:n], logps[n:], mb.ref_chosen.to(logps.device),
                                  mb.ref_rejected.to(logps.device), self.beta)
        return losses.sum(), n, _reward_sums(rc, rr)

    @torch.inference_mode()
    def evaluate(self, model: Any, rows: Sequence[Any], batch_size: int, pad_id: int,
                 device: torch.device, world: World = SINGLE, progress: Callable | None = None,
                 desc: str = "validate") -> dict[str, float]:
        """Mean DPO loss and rewards of ``rows``; each rank scores its share, then sums."""
        was_training = model.training
        model.eval()
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))[world.rank::world.size]
        bar = progress(total=math.ceil(len(order) / batch_size), desc=desc, unit="batch") \
            if progress else None
        total = dict.fromkeys(("loss", *self.sums), 0.0)
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            s, _, sums = self.loss_sum(model, pair_batch([rows[i] for i in idx], idx, pad_id,
                                                         is_packed(model)), device)
            total["loss"] += float(s)
            for key, value in sums.items():
                total[key] += value
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        model.train(was_training)
        values = all_reduce_sum([*total.values(), float(len(order))], world)
        n = max(values[-1], 1.0)
        return {**{key: v / n for key, v in zip(total, values, strict=False)}, "pairs": values[-1]}


@torch.inference_mode()
def reference_logps(model: Any, pairs: Sequence[TokenizedPair], batch_size: int, pad_id: int,
                    device: Any = None, progress: Callable | None = None,
                    desc: str = "reference log-probs",
                    packed: bool = False) -> list[tuple[float, float]]:
    """The summed answer log-probs of each pair's (chosen, rejected) under ``model`` as it is.

    Runs in eval mode (no dropout), on batches of similar lengths: padded, or packed
    (``packed``: only inside ``fastpath.fast_training`` with packing on); ``progress``
    (a ``Reporter.bar``) gets a bar over the batches.
    """
    was_training = model.training
    model.eval()
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i]))
    bar = progress(total=math.ceil(len(order) / batch_size), desc=desc, unit="batch") \
        if progress else None
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        mb = pair_batch([pairs[i] for i in idx], idx, pad_id, packed=packed)
        logps = sequence_logps(model, mb.sequences, device).tolist()
        for j, i in enumerate(idx):
            out[i] = (logps[j], logps[len(idx) + j])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model.train(was_training)
    return out


def pairs_fingerprint(pairs: Sequence[TokenizedPair]) -> str:
    """A hash of the pairs' tokens and labels: the stored reference values fit these rows."""
    h = hashlib.sha256()
    for p in pairs:
        for side in (p.chosen, p.rejected):
            h.update(",".join(map(str, side.input_ids)).encode() + b"|")
            h.update(",".join(map(str, side.labels)).encode() + b";")
    return h.hexdigest()


def setup_reference(model: Any, splits: dict[str, list[TokenizedPair]], batch_size: int,
                    pad_id: int, device: Any, run_dir: Path, write: bool,
                    reporter: Reporter = SILENT, packed: bool = False) -> dict[str, list[ScoredPair]]:
    """The pairs of each split with their reference log-probs, read back or computed once.

    Call it before a checkpoint's weights are loaded: the reference is the model as the
    run started. A stored ``REFERENCE`` whose fingerprint fits the pairs is read (a
    resumed run); otherwise the values are computed and, when ``write``, stored.

    Args:
        splits: ``{"train": pairs, "validation": pairs}``.
        write: store the values (rank 0 of a run).
        packed: pack the batches (the model is inside ``fast_training`` with packing).
    """
    import json

    path = run_dir / REFERENCE
    prints = {name: pairs_fingerprint(pairs) for name, pairs in splits.items()}
    stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if stored is not None and stored.get("fingerprints") == prints:
        values = stored["values"]
        reporter.info(f"reference log-probs: read from {path}")
    else:
        if stored is not None:
            reporter.warning(f"{path} was computed for other rows (the data changed); "
                             "computing the reference log-probs again from the starting model")
        started = time.perf_counter()
        values = {name: reference_logps(model, pairs, batch_size, pad_id, device,
                                        reporter.bar, f"reference log-probs ({name})", packed)
                  for name, pairs in splits.items()}
        n = sum(len(v) for v in values.values())
        reporter.info(f"reference log-probs: {n:,} pairs in {time.perf_counter() - started:.0f}s "
                      "(once, before training)")
        if write:
            write_json_atomic(path, {"fingerprints": prints, "values": values})
    return {name: [ScoredPair(p, c, r) for p, (c, r) in zip(pairs, values[name], strict=True)]
            for name, pairs in splits.items()}


@dataclass
class PreferenceMargin:
    """How much more a model prefers the chosen answers than its reference does.

    ``margin`` is the mean over pairs of ``(pc - rc) - (pr - rr)`` in nats (summed answer
    log-probs; DPO's reward margin divided by beta); ``accuracy`` the share of pairs
    where it is above 0; ``logp_margin`` the mean ``pc - pr`` of the model alone.
    """

    pairs: int
    margin: float
    accuracy: float
    logp_margin: float
    margins: list[float] = field(default_factory=list)  # per scored pair, in the order given
    dropped: int = 0  # pairs longer than max_length, not scored


def pair_logps(model: Any, tokenizer: Any, examples: Sequence[Example], batch_size: int,
               chat_template: str | None = None,
               max_length: int = DEFAULT_MAX_LENGTH) -> tuple[list[int], list[tuple[float, float]]]:
    """The summed answer log-probs (chosen, rejected) of each pair under ``model`` as it is.

    Pairs are rendered as training renders them (``tokenize_pair``); a pair whose longer
    side is over ``max_length`` tokens is not scored. Two models with one tokenizer and
    template keep the same pairs, so their values line up pair by pair.

    Returns:
        (the indices of the scored examples, their log-probs in that order).

    Raises:
        TrainingError: no pair is ``max_length`` tokens or shorter.
        DataError: an example is not a pair, or the template cannot mask the answers.
    """
    template = resolve_chat_template(tokenizer, chat_template)
    tokenized = [tokenize_pair(tokenizer, e, template) for e in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    idx = [i for i, t in enumerate(tokenized) if t.longest <= max_length]
    if not idx:
        raise TrainingError(f"no pair of {len(tokenized)} is {max_length} tokens or shorter",
                            hint="raise max_length, or give shorter pairs")
    device = next(model.parameters()).device
    return idx, reference_logps(model, [tokenized[i] for i in idx], batch_size, pad, device)


def preference_margin(model: Any, tokenizer: Any, examples: Sequence[Example], batch_size: int,
                      chat_template: str | None = None, reference: Any = None,
                      max_length: int = DEFAULT_MAX_LENGTH) -> PreferenceMargin:
    """Score a model on held-out preference pairs against a reference.

    Args:
        model: the model to score (a peft model for an adapter).
        tokenizer: its tokenizer.
        examples: pairs, as ``tunelab.data.load.load_pairs`` reads them.
        batch_size: pairs per forward pass.
        chat_template: the run's ``data.chat_template`` (None: the tokenizer's).
        reference: None (``model`` must be a peft model: the reference is the model with
            its adapter disabled), another model, or the (chosen, rejected) log-probs of
            each example.
        max_length: tokens; longer pairs are not scored (counted in ``dropped``).

    Raises:
        TrainingError: no reference is given for a model without an adapter, or no pair
            is left to score.
        DataError: an example is not a pair, or the template cannot mask the answers.
    """
    given = None if reference is None or hasattr(reference, "parameters") else list(reference)
    if given is not None and len(given) != len(examples):
        raise TrainingError(f"{len(given)} reference values for {len(examples)} pairs",
                            hint="give one (chosen, rejected) pair of log-probs per example")
    if reference is None and not hasattr(model, "disable_adapter"):
        raise TrainingError("the model has no adapter to disable, so it has no reference",
                            hint="pass reference= (a model, or the reference log-probs)")
    idx, policy = pair_logps(model, tokenizer, examples, batch_size, chat_template, max_length)
    kept = [examples[i] for i in idx]
    if given is not None:
        ref = [(float(given[i][0]), float(given[i][1])) for i in idx]
    elif reference is not None:
        ref = pair_logps(reference, tokenizer, kept, batch_size, chat_template, max_length)[1]
    else:
        with model.disable_adapter():
            ref = pair_logps(model, tokenizer, kept, batch_size, chat_template, max_length)[1]
    margins = [(pc - rc) - (pr - rr) for (pc, pr), (rc, rr) in zip(policy, ref, strict=True)]
    return PreferenceMargin(
        pairs=len(kept), margin=sum(margins) / len(margins),
        accuracy=sum(m > 0 for m in margins) / len(margins),
        logp_margin=sum(pc - pr for pc, pr in policy) / len(policy),
        margins=margins, dropped=len(examples) - len(kept))
