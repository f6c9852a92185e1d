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

Smaller ones, each a handful of elementwise passes per layer: the SiLU gate of
Llama-style MLPs keeps only its inputs for the backward pass (one activation tensor less
per layer); RMSNorm is one autograd function that keeps ``x`` and one scalar per token
and runs three passes back instead of the library graph's seven; the rotary embedding is
applied half by half into the projections' own layout, with no ``rotate_half`` copies;
and glibc is asked to keep freed activation memory for reuse (``_keep_freed_memory``).

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


class _RmsNorm(torch.autograd.Function):
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dimension, in float32.

    The autograd graph of the library's RMSNorm runs seven elementwise passes forward and
    back and keeps the normalized copy of ``x``; this keeps ``x`` and one scalar per token
    (``rstd``) and computes the input gradient in three passes:
    ``dx = rstd * (g w) - x * rstd^3 * mean(g w x)``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        rstd = torch.linalg.vector_norm(x2, dim=-1).square_().div_(x2.shape[-1]).add_(eps).rsqrt_()
        y = torch.mul(x2, rstd[:, None]).mul_(weight)
        ctx.save_for_backward(x2, rstd, weight)
        ctx.shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        x2, rstd, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (g2 * x2).mul_(rstd[:, None]).sum(0)
        if ctx.needs_input_grad[0]:
            gw = g2 * weight
            dot = torch.linalg.vecdot(gw, x2)  # sum(g w x) per token
            coef = dot.mul_(rstd.pow(3)).div_(-x2.shape[-1])
            grad_x = gw.mul_(rstd[:, None]).addcmul_(x2, coef[:, None]).view(ctx.shape)
        return grad_x, grad_w, None


# RMSNorms computing weight * (x * rsqrt(mean(x^2) + eps)), as _RmsNorm does.
_PLAIN_RMSNORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})


def _rmsnorm_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.float32 or self.weight.dtype != torch.float32:
        return type(self).forward(self, x)
    return _RmsNorm.apply(x, self.weight, self.variance_epsilon)


def _lean_norm(m: Any) -> bool:
    return (type(m).__name__ in _PLAIN_RMSNORMS and isinstance(getattr(m, "weight", None), torch.Tensor)
            and isinstance(getattr(m, "variance_epsilon", None), float))


class _Rotary(torch.autograd.Function):
    """Rotary position embedding ``x cos + rotate_half(x) sin``, written half by half.

    With ``x = [x1, x2]``: ``[x1 c1 - x2 s1, x2 c2 + x1 s2]``; the backward pass is the
    transposed rotation. The output has the memory layout of ``x`` (tokens before heads,
    as the projections wrote it), with no ``rotate_half`` copy, negation or concatenation.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, sign=1.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, sign=-1.0), None, None


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """``[x1 c1 - sign x2 s1, x2 c2 + sign x1 s2]`` (sign -1 rotates back, with the halves' sines swapped)."""
    half = x.shape[-1] // 2
    out = torch.empty_like(x)  # preserves x's strides
    x1, x2 = x[..., :half], x[..., half:]
    o1, o2 = out[..., :half], out[..., half:]
    c1, c2, s1, s2 = cos[..., :half], cos[..., half:], sin[..., :half], sin[..., half:]
    if sign < 0:  # the transpose: d/dx1 = g1 c1 + g2 s2, d/dx2 = g2 c2 - g1 s1
        s1, s2 = s2, s1
    torch.mul(x1, c1, out=o1).addcmul_(x2, s1, value=-sign)
    torch.mul(x2, c2, out=o2).addcmul_(x1, s2, value=sign)
    return out


def _fast_rotary(original: Any) -> Any:
    """A drop-in for a Llama-style ``apply_rotary_pos_emb``; other dtypes or shapes go to ``original``."""

    def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                             unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        d = q.shape[-1]
        if not (q.dtype == k.dtype == cos.dtype == sin.dtype == torch.float32
                and k.shape[-1] == cos.shape[-1] == sin.shape[-1] == d and d % 2 == 0):
            return original(q, k, cos, sin, unsqueeze_dim)
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return _Rotary.apply(q, cos, sin), _Rotary.apply(k, cos, sin)

    # A marker that this is our wrapper; mypy does not model attributes set on a function.
    apply_rotary_pos_emb.tunelab_original = original  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


# The modeling modules whose ``apply_rotary_pos_emb`` is the standard half rotation
# (``q cos + rotate_half(q) sin``); the attention modules look it up at each call.
_ROTARY_MODULES = {
    "llama": "transformers.models.llama.modeling_llama",
    "mistral": "transformers.models.mistral.modeling_mistral",
    "qwen2": "transformers.models.qwen2.modeling_qwen2",
    "qwen3": "transformers.models.qwen3.modeling_qwen3",
    "gemma3_text": "transformers.models.gemma3.modeling_gemma3",
}


@contextlib.contextmanager
def _rotary_swapped(model_type: str | None) -> Iterator[bool]:
    """Swap in ``_fast_rotary`` for ``model_type``'s modeling module while inside."""
    import sys

    module: Any = sys.modules.get(_ROTARY_MODULES.get(model_type or "", ""))  # Any: patched below
    original = getattr(module, "apply_rotary_pos_emb", None)
    if original is None or hasattr(original, "tunelab_original"):
        yield False
        return
    module.apply_rotary_pos_emb = _fast_rotary(original)
    try:
        yield True
    finally:
        module.apply_rotary_pos_emb = original


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
    lean_norms: int = 0
    fast_rotary: bool = False

    def describe(self) -> str:
        parts = ["packed rows (no padding)" if self.packing else "padded batches"]
        if self.fused_lora_layers:
            parts.append(f"fused LoRA in {self.fused_lora_layers} layers")
        if self.lean_mlps:
            parts.append(f"lean SiLU gates in {self.lean_mlps} MLPs")
        if self.lean_norms:
            parts.append(f"lean RMSNorm in {self.lean_norms} norms")
        if self.fast_rotary:
            parts.append("half-wise rotary embedding")
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
    norms = [m for m in model.modules() if _lean_norm(m)]
    _keep_freed_memory()
    try:
        with _rotary_swapped(getattr(cfg, "model_type", None)) as rotary:
            if use_packing:
                assert cfg is not None  # supports_packing requires a config
                cfg._attn_implementation = PACKED_ATTENTION
            for m in patched:
                m.forward = types.MethodType(_fused_forward, m)
            for m in mlps:
                m.forward = types.MethodType(_mlp_forward, m)
            for m in norms:
                m.forward = types.MethodType(_rmsnorm_forward, m)
            yield FastPath(use_packing, len(patched), len(mlps), len(norms), rotary)
    finally:
        for m in patched + mlps + norms:
            m.__dict__.pop("forward", None)
        if use_packing:
            assert cfg is not None  # supports_packing requires a config
            cfg._attn_implementation = old_impl


def is_packed(model: Any) -> bool:
    """Whether ``model`` currently runs packed attention (inside ``fast_training``)."""
    cfg = getattr(_inner(model), "config", None)
    return getattr(cfg, "_attn_implementation", None) == PACKED_ATTENTION
