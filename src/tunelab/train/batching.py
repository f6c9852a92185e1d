"""Turn tokenized examples into optimizer steps of padded micro-batches.

An optimizer step takes ``batch_size * gradient_accumulation_steps`` rows; the rows of
each epoch come in a seeded shuffle, so the same seed sees the same rows in the same
order. With ``group_by_length`` the rows of one step are sorted by length before they
are cut into micro-batches, which cuts padding without changing which rows a step sees
(so the step's loss is the same as without grouping).

With ``packed`` the rows of a micro-batch are concatenated into one padding-free
sequence instead (see ``pack`` and ``tunelab.train.fastpath``); grouping is then moot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.data.template import IGNORE_INDEX, TokenizedExample


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (B, T) right-padded, or (1, T) packed
    attention_mask: torch.Tensor  # (B, T) 1 = real token
    labels: torch.Tensor  # (B, T) IGNORE_INDEX where not trained
    row_ids: list[int]  # indices into the training set, for exact-resume checks
    position_ids: torch.Tensor | None = None  # packed: (1, T), restarting at 0 in each row
    cu_seqlens: torch.Tensor | None = None  # packed: (rows + 1,) int32 row boundaries

    @property
    def packed(self) -> bool:
        return self.cu_seqlens is not None

    def model_inputs(self, device: torch.device | str | None = None) -> dict:
        """Keyword arguments for the decoder's forward (packed rows carry their boundaries)."""
        def to(t: torch.Tensor) -> torch.Tensor:
            return t if device is None else t.to(device)
        if not self.packed:
            return {"input_ids": to(self.input_ids), "attention_mask": to(self.attention_mask)}
        assert self.cu_seqlens is not None and self.position_ids is not None  # packed sets both
        longest = int((self.cu_seqlens[1:] - self.cu_seqlens[:-1]).max())
        cu = to(self.cu_seqlens)
        return {"input_ids": to(self.input_ids), "position_ids": to(self.position_ids),
                "cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}

    @property
    def num_loss_tokens(self) -> int:
        # Labels are shifted by one in the loss: the first position never counts.
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(rows: Sequence[TokenizedExample], row_ids: list[int], pad_id: int) -> MicroBatch:
    """Right-pad rows to the longest one."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        mask[i, :n] = 1
    return MicroBatch(ids, mask, labels, list(row_ids))


def pack(rows: Sequence[TokenizedExample], row_ids: list[int]) -> MicroBatch:
    """Concatenate rows into one sequence of shape (1, total tokens), with no padding.

    Each row's first label is set to IGNORE_INDEX: labels are shifted by one in the
    loss, so that position would otherwise be the target of the previous row's last
    token. (A row's first token is never a target in the padded layout either.)
    """
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    bounds = [0]
    for r in rows:
        ids.extend(r.input_ids)
        labels.append(IGNORE_INDEX)
        labels.extend(r.labels[1:])
        positions.extend(range(len(r)))
        bounds.append(bounds[-1] + len(r))
    n = len(ids)
    return MicroBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        attention_mask=torch.ones((1, n), dtype=torch.long),
        labels=torch.tensor([labels], dtype=torch.long),
        row_ids=list(row_ids),
        position_ids=torch.tensor([positions], dtype=torch.long),
        cu_seqlens=torch.tensor(bounds, dtype=torch.int32),
    )


def batch(rows: Sequence[TokenizedExample], row_ids: list[int], pad_id: int, packed: bool) -> MicroBatch:
    """``pack`` or ``collate`` the rows."""
    return pack(rows, row_ids) if packed else collate(rows, row_ids, pad_id)


def steps_per_epoch(num_rows: int, batch_size: int, accumulation: int) -> int:
    return math.ceil(num_rows / (batch_size * accumulation))


def epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    """The seeded row order of one epoch (independent of any global RNG state)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_rows, generator=g).tolist()


def iter_steps(rows: Sequence[Any], batch_size: int, accumulation: int, seed: int,
               epoch: int, pad_id: int, group_by_length: bool,
               start_step: int = 0, rank: int = 0, world_size: int = 1,
               packed: bool = False,
               make_batch: Callable[..., Any] | None = None) -> Iterator[list[Any]]:
    """Yield the micro-batches of each optimizer step of one epoch, from ``start_step``.

    The last step of an epoch may be smaller; its loss is still the mean over its own
    answer tokens. With ``world_size`` > 1 this process gets the rows
    ``step_rows[rank::world_size]`` of each step (possibly none of a short last step).
    ``make_batch`` ``(rows, row_ids, pad_id, packed)`` builds a micro-batch (default
    ``batch``; preference pairs bring their own); rows only need a length.
    """
    make = make_batch or batch
    order = epoch_order(len(rows), seed, epoch)
    per_step = batch_size * accumulation
    for s in range(start_step, steps_per_epoch(len(rows), batch_size, accumulation)):
        idx = order[s * per_step:(s + 1) * per_step]
        if group_by_length:
            idx = sorted(idx, key=lambda i: len(rows[i]))
        idx = idx[rank::world_size]  # after sorting: ranks get rows of similar lengths
        yield [make([rows[i] for i in idx[k:k + batch_size]], idx[k:k + batch_size], pad_id, packed)
               for k in range(0, len(idx), batch_size)]
