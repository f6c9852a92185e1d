"""Data-parallel training over several processes, exact and without a DDP wrapper.

Each process (rank) takes the rows ``step_rows[rank::world]`` of every optimizer step,
so together the ranks see exactly the rows one process would. The loss of a step is the
summed cross-entropy divided by the step's GLOBAL answer-token count (all-reduced
first); after backward the gradients of the trainable parameters are summed over the
ranks, before clipping and the optimizer step. Every rank then applies the same update
to the same weights, so they stay in sync, and the per-step loss equals one process's
up to the order of float sums. Only rank 0 writes files.

The process group comes from the environment that ``torch.distributed.run`` (``tunelab
train --nproc N``) or ``accelerate launch`` sets (RANK, WORLD_SIZE, MASTER_ADDR, ...):
gloo on CPU, NCCL on CUDA. This module knows nothing of configs or run folders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def env_world_size() -> int:
    """The number of processes a launcher started (1 when none did)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_world(use_cuda: bool) -> World:
    """Join the process group a launcher set up; ``SINGLE`` without a launcher.

    Idempotent: a second call (the next phase of a phased run) reuses the group.
    """
    if env_world_size() <= 1:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def close_world() -> None:
    """Leave the process group (at the end of a command), if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float], world: World) -> list[float]:
    """The sums over ranks of a few numbers (float64, so token counts stay exact)."""
    if not world.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(list(values), dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when it is true on any (a stop signal that reached one rank)."""
    return all_reduce_sum([float(flag)], world)[0] > 0


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` on every rank (a run folder, a decision)."""
    if not world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not world.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_params(params: Sequence[torch.Tensor], world: World) -> None:
    """Copy rank 0's values into every rank's parameters (equal starting weights)."""
    if not world.distributed:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def all_reduce_grads(params: Sequence[torch.Tensor], world: World) -> None:
    """Sum the gradients of ``params`` over ranks, in place.

    A parameter without a gradient on some rank (its rows did not reach it) joins with
    zeros; one without a gradient on every rank keeps ``None``, exactly as in one
    process, so the optimizer skips it there too.
    """
    if not world.distributed:
        return
    import torch.distributed as dist

    dev = _device()
    has = torch.tensor([float(p.grad is not None) for p in params], device=dev)
    dist.all_reduce(has)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p, h in zip(params, has.tolist(), strict=True):
        if h == 0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        # One collective per dtype over a flat buffer, not one per tensor.
        flat = torch.cat([g.reshape(-1) for g in grads]).to(dev)
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n


def interleave(parts: Sequence[Sequence[int]]) -> list[int]:
    """Undo ``rows[rank::world]``: the rows of a step in the order one process sees them."""
    total = sum(len(p) for p in parts)
    world = len(parts)
    return [parts[i % world][i // world] for i in range(total)]


def barrier(world: World) -> None:
    """Wait until every rank gets here (e.g. rank 0 has finished writing a file)."""
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def cuda_usable() -> bool:
    """True when this process should train on CUDA (and so use NCCL between ranks)."""
    return torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""
