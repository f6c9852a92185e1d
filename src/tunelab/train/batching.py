"""Turn tokenized examples into optimizer steps of padded micro-batches.

An optimizer step takes ``batch_size * gradient_accumulation_steps`` rows; the rows of
each epoch come in a seeded shuffle, so the same seed sees the same rows in the same
order. With ``group_by_length`` the rows of one step are sorted by length before they
are cut into micro-batches, which cuts padding without changing which rows a step sees
(so the step's loss is the same as without grouping).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from tunelab.data.template import IGNORE_INDEX, TokenizedExample


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T) 1 = real token
    labels: torch.Tensor  # (B, T) IGNORE_INDEX where not trained
    row_ids: list[int]  # indices into the training set, for exact-resume checks

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


def steps_per_epoch(num_rows: int, batch_size: int, accumulation: int) -> int:
    return math.ceil(num_rows / (batch_size * accumulation))


def epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    """The seeded row order of one epoch (independent of any global RNG state)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_rows, generator=g).tolist()


def iter_steps(rows: Sequence[TokenizedExample], batch_size: int, accumulation: int, seed: int,
               epoch: int, pad_id: int, group_by_length: bool,
               start_step: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[list[MicroBatch]]:
    """Yield the micro-batches of each optimizer step of one epoch, from ``start_step``.

    The last step of an epoch may be smaller; its loss is still the mean over its own
    answer tokens. With ``world_size`` > 1 this process gets the rows
    ``step_rows[rank::world_size]`` of each step (possibly none of a short last step).
    """
    order = epoch_order(len(rows), seed, epoch)
    per_step = batch_size * accumulation
    for s in range(start_step, steps_per_epoch(len(rows), batch_size, accumulation)):
        idx = order[s * per_step:(s + 1) * per_step]
        if group_by_length:
            idx = sorted(idx, key=lambda i: len(rows[i]))
        idx = idx[rank::world_size]  # after sorting: ranks get rows of similar lengths
        yield [collate([rows[i] for i in idx[k:k + batch_size]], idx[k:k + batch_size], pad_id)
               for k in range(0, len(idx), batch_size)]
