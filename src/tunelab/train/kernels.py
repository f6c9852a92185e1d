"""The fast path's kernels: exact rewrites of what a training step computes, nothing else.

Each is an autograd function or a ``forward`` that ``tunelab.train.fastpath`` swaps in
while training (and only then): packed attention over the rows of one sequence, the
fused LoRA linear (one ``addmm_`` for the low-rank product, scaling as its ``alpha``),
the lean SiLU gate, one-function RMSNorm and the half-wise rotary embedding. The
``_lean_*``/``_fusable`` predicates say which modules a rewrite applies to. This module
changes no state of its own: patching, restoring and the process-wide settings live in
``tunelab.train.fastpath``. ``tests/unit/train/test_fastpath.py`` checks each against
the library's code (values and gradients within 1e-5).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


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


# Gated MLPs computing down(silu(gate(x)) * up(x)), whose forward _mlp_forward repeats.
_SILU_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})


def _mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(_SiluMul.apply(self.gate_proj(x), self.up_proj(x)))


def _lean_mlp(m: Any) -> bool:
    return (type(m).__name__ in _SILU_MLPS
            and type(getattr(m, "act_fn", None)).__name__ in ("SiLUActivation", "SiLU"))
