"""The fast training path: padding-free packed rows and a fused LoRA linear.

Two measured sources of waste on a CPU (see ``benchmarks/train_speed.py``):

* **Padding.** Rows of one micro-batch are concatenated into a single sequence with
  per-row position ids; attention runs causally inside each row only (one
  scaled-dot-product call per row, from the row boundaries ``cu_seq_lens``), so no
  token attends across rows and no compute goes to padding. The linear layers, which
  carry most of the FLOPs, see one (tokens x hidden) matrix with no pad rows in it.
* **LoRA's extra passes.** peft computes ``base(x) + lora_B(lora_A(dropout(x))) *
  scaling`` as separate kernels: a full pass over the (tokens x out) result for the
  scaling, another for the sum, and the same again in the backward pass. The fused
  linear adds the low-rank product into the base GEMM's output with one ``addmm_``
  (scaling as its ``alpha``) and writes the input gradient the same way. The adapter
  stays a peft adapter: saving, loading and merging are untouched; only the training
  forward of each LoRA linear is swapped, inside ``fast_training`` and no longer.

Two smaller ones: the SiLU gate of Llama-style MLPs keeps only its inputs for the
backward pass (one activation tensor less per layer), and glibc is asked to keep freed
activation memory for reuse (``_keep_freed_memory``).

All are exact rewrites, not approximations: ``tests/unit/train/test_fastpath.py``
checks that the packed loss equals the padded loss of the same rows, and that the
gradients equal the reference path's, within 1e-5.

Packing is used only for model types whose attention is known to work with it (their
attention goes through transformers' attention interface and has no logit
soft-capping); other models train on padded batches.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

PACKED_ATTENTION = "tunelab_packed"

# Model types whose attention modules call the registered attention function with
# (query, key, value, mask, dropout, scaling[, sliding_window]) and nothing else that
# SDPA cannot express. Each has a packed-vs-padded equality test.
PACKABLE_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma3_text",
})


def _window_mask(length: int, window: int, device: torch.device) -> torch.Tensor:
    """Causal mask of one row, limited to the last ``window`` keys (sliding-window layers)."""
    q = torch.arange(length, device=device)[:, None]
    k = torch.arange(length, device=device)[None, :]
    return (k <= q) & (k > q - window)


def packed_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0,
                     scaling: float | None = None, sliding_window: int | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed row.

    ``query`` is (1, heads, tokens, dim) and ``key``/``value`` (1, kv_heads, tokens, dim);
    the rows' boundaries come as ``cu_seq_lens_q`` (cumulative lengths, starting at 0).
    Without boundaries the input is one unpadded row.

    Returns:
        ((1, tokens, heads, dim) output, None), as transformers' attention functions do.
    """
    if attention_mask is not None:
        raise ValueError("packed attention takes no padding mask: pack the rows instead")
    cu = kwargs.get("cu_seq_lens_q")
    bounds = [0, query.shape[2]] if cu is None else [int(x) for x in cu.tolist()]
    if query.shape[0] != 1 and cu is not None:
        raise ValueError("packed attention expects all rows packed into one sequence")
    p = dropout if module.training else 0.0
    lengths = [e - s for s, e in zip(bounds[:-1], bounds[1:], strict=True)]
    # split, not slicing: the backward of a split is one concatenation, where each
    # slice's backward would fill a zero tensor of the whole sequence.
    outs = []
    for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2), strict=True):
        n = q.shape[2]
        if sliding_window is not None and n > sliding_window:
            mask = _window_mask(n, sliding_window, query.device)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                               scale=scaling, enable_gqa=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p,
                                               scale=scaling, enable_gqa=True)
        outs.append(o.transpose(1, 2))  # (1, rows' tokens, heads, dim), a view
    # One copy: the concatenation along tokens is already the contiguous output.
    out = outs[0].contiguous() if len(outs) == 1 else torch.cat(outs, dim=1)
    return out, None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)


_register()


def _inner(model: Any) -> Any:
    from tunelab.train.loss import unwrap

    return unwrap(model)


def supports_packing(model: Any) -> bool:
    """Whether ``model``'s attention can take packed rows (see ``PACKABLE_MODEL_TYPES``)."""
    cfg = getattr(_inner(model), "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in PACKABLE_MODEL_TYPES:
        return False
    return getattr(cfg, "attn_logit_softcapping", None) is None


class _LoraLinearFn(torch.autograd.Function):
    """``x W^T + b + scaling * (d A^T) B^T`` with ``d`` the (dropped-out) LoRA input.

    ``W`` and ``b`` are the frozen base weights: no gradient is computed for them.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, d: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        d2 = d.reshape(-1, shape[-1])
        da = d2 @ a.t()  # (tokens, r): the only activation the adapter keeps
        y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        y.addmm_(da, b.t(), alpha=scaling)
        ctx.save_for_backward(d2, da, weight, a, b)
        ctx.scaling = scaling
        ctx.same_input = d is x
        ctx.shape = shape
        return y.view(*shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        d2, da, weight, a, b = ctx.saved_tensors
        s = ctx.scaling
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_b = (da.t() @ g2).t().mul_(s)  # (out, r); this order is the faster GEMM here
        g_da = (g2 @ b).mul_(s)  # (tokens, r)
        grad_a = g_da.t() @ d2  # (r, in)
        grad_x = grad_d = None
        if ctx.same_input:
            if ctx.needs_input_grad[0]:
                grad_x = (g2 @ weight).addmm_(g_da, a).view(ctx.shape)
        else:
            if ctx.needs_input_grad[0]:
                grad_x = (g2 @ weight).view(ctx.shape)
            if ctx.needs_input_grad[1]:
                grad_d = (g_da @ a).view(ctx.shape)
        return grad_x, grad_d, None, None, grad_a, grad_b, None


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = self.active_adapters[0]
    drop = self.lora_dropout[name]
    d = drop(x) if not isinstance(drop, torch.nn.Identity) else x
    return _LoraLinearFn.apply(x, d, self.base_layer.weight, self.base_layer.bias,
                               self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name])


def _fusable(m: Any) -> bool:
    """A peft LoRA linear that the fused function computes exactly."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    if not isinstance(m, LoraLinear) or type(m.base_layer) is not torch.nn.Linear:
        return False
    active = list(m.active_adapters)
    if len(active) != 1 or m.disable_adapters or m.merged:
        return False
    name = active[0]
    if name not in m.lora_A or name in getattr(m, "lora_variant", {}) or m.use_dora.get(name, False):
        return False
    if getattr(m, "fan_in_fan_out", False) or getattr(m, "lora_bias", {}).get(name, False):
        return False
    w = m.base_layer.weight
    return not w.requires_grad and m.lora_A[name].weight.dtype == w.dtype


class _SiluMul(torch.autograd.Function):
    """``silu(gate) * up`` that keeps only its inputs for the backward pass.

    Autograd would also keep ``silu(gate)`` (one more (tokens x intermediate) tensor per
    layer); here it is recomputed in the backward pass, which costs one elementwise pass.
    """

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate).mul_(up)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        gate, up = ctx.saved_tensors
        grad_gate = grad_up = None
        if ctx.needs_input_grad[1]:
            grad_up = grad * F.silu(gate)
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return grad_gate, grad_up


# Gated MLPs computing down(silu(gate(x)) * up(x)), whose forward _mlp_forward repeats.
_SILU_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})


def _mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(_SiluMul.apply(self.gate_proj(x), self.up_proj(x)))


def _lean_mlp(m: Any) -> bool:
    return (type(m).__name__ in _SILU_MLPS
            and type(getattr(m, "act_fn", None)).__name__ in ("SiLUActivation", "SiLU"))


_MALLOC_TUNED = False


def _keep_freed_memory() -> None:
    """Let glibc reuse freed activation memory instead of returning it to the kernel.

    A training step frees and reallocates gigabytes of same-sized activations; with
    glibc's defaults, blocks above a (dynamic) threshold are mmap-ed and unmapped each
    time, and every reuse starts with page faults. Blocks up to 32 MB now come from the
    heap, which is not trimmed below 1 GB. Peak memory is unchanged (the same live
    tensors); only the kernel round trips go. No effect off glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's upper limit on 64-bit)
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


@dataclass
class FastPath:
    """What ``fast_training`` switched on, for the run's log."""

    packing: bool
    fused_lora_layers: int
    lean_mlps: int = 0

    def describe(self) -> str:
        parts = ["packed rows (no padding)" if self.packing else "padded batches"]
        if self.fused_lora_layers:
            parts.append(f"fused LoRA in {self.fused_lora_layers} layers")
        if self.lean_mlps:
            parts.append(f"lean SiLU gates in {self.lean_mlps} MLPs")
        return ", ".join(parts)


@contextlib.contextmanager
def fast_training(model: Any, packing: bool = True, fused_lora: bool = True) -> Iterator[FastPath]:
    """Switch ``model`` to the fast path for the duration of a training run.

    Args:
        model: a transformers causal LM, possibly peft-wrapped.
        packing: use packed attention when the model supports it; batches must then be
            packed (``tunelab.train.batching.pack``) while inside the context.
        fused_lora: compute eligible LoRA linears with the fused function.

    Yields:
        A ``FastPath`` telling what is on. Everything is restored on exit.
    """
    inner = _inner(model)
    cfg = getattr(inner, "config", None)
    use_packing = packing and supports_packing(model)
    old_impl = getattr(cfg, "_attn_implementation", None)
    patched = [m for m in model.modules() if _fusable(m)] if fused_lora else []
    mlps = [m for m in model.modules() if _lean_mlp(m)]
    _keep_freed_memory()
    try:
        if use_packing:
            cfg._attn_implementation = PACKED_ATTENTION
        for m in patched:
            m.forward = types.MethodType(_fused_forward, m)
        for m in mlps:
            m.forward = types.MethodType(_mlp_forward, m)
        yield FastPath(use_packing, len(patched), len(mlps))
    finally:
        for m in patched + mlps:
            m.__dict__.pop("forward", None)
        if use_packing:
            cfg._attn_implementation = old_impl


def is_packed(model: Any) -> bool:
    """Whether ``model`` currently runs packed attention (inside ``fast_training``)."""
    cfg = getattr(_inner(model), "config", None)
    return getattr(cfg, "_attn_implementation", None) == PACKED_ATTENTION
