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

Importing this module changes nothing. While ``fast_training`` is open it changes the
following, and its exit (normal or by an exception) puts each back:

* the model: the ``forward`` of each fused LoRA linear, lean MLP and lean RMSNorm (an
  instance attribute; whatever the instance had before comes back) and, with packing,
  the config's ``_attn_implementation``;
* transformers' attention registry, with packing only: the ``tunelab_packed`` entry of
  ``ALL_ATTENTION_FUNCTIONS`` is added, and removed on exit;
* the model type's modeling module (e.g. ``transformers.models.llama.modeling_llama``):
  its ``apply_rotary_pos_emb`` is swapped for the half-wise one, which every model of
  that type in the process then uses (same results within 1e-5; other dtypes go to
  the original), and the original comes back on exit;
* glibc's malloc (``_keep_freed_memory``): ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``.
  glibc cannot report their values, so exit sets back the values the process started
  with: those the environment gave (``GLIBC_TUNABLES``, ``MALLOC_*_``), else glibc's
  documented defaults (a value other code set with ``mallopt`` before cannot be seen,
  and is not what comes back). ``malloc_tuning`` records what was set and put back.
  One thing cannot be undone: once either parameter has been set, glibc's dynamic mmap
  threshold stays off for the rest of the process (glibc has no call to turn it on).

The registry entry, the rotary swap and the malloc settings are process-wide, so
contexts that overlap (two models in one process) share them: the first to open makes
each change, the last to close undoes it. ``FastPath.suspended`` takes the model's
changes and its rotary swap back for a while (validation and evaluation hooks during
training run on the model as the library computes it) and keeps the registry entry (no
model uses it unless configured to) and the malloc settings (they change speed only).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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


# Guards the holder counts of the process-wide changes (contexts may open in threads).
_SHARED_LOCK = threading.Lock()


class _Shared:
    """One process-wide change: made by the first holder, undone when the last lets go.

    ``make`` makes the change and returns the function that undoes it, or None when it
    changed nothing (then no one holds it).
    """

    def __init__(self, make: Callable[[], Callable[[], None] | None]) -> None:
        self._make = make
        self._undo: Callable[[], None] | None = None
        self._holders = 0

    def take(self) -> bool:
        """Hold the change (making it if no one holds it yet); False when nothing was changed."""
        with _SHARED_LOCK:
            if self._holders == 0:
                self._undo = self._make()
                if self._undo is None:
                    return False
            self._holders += 1
            return True

    def let_go(self) -> None:
        """Stop holding it; the last holder's call undoes the change."""
        with _SHARED_LOCK:
            self._holders -= 1
            if self._holders == 0:
                undo, self._undo = self._undo, None
                assert undo is not None  # take() returned True, so there is one
                undo()

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        taken = self.take()
        try:
            yield taken
        finally:
            if taken:
                self.let_go()


def _register_packed_attention() -> Callable[[], None]:
    """Add ``packed_attention`` to transformers' shared attention registry; returns the undo.

    The entry goes into the shared ``ALL_ATTENTION_FUNCTIONS`` instance (through which the
    modeling code of every packable model type looks attention functions up) as an item,
    not into ``AttentionInterface``'s class-wide mapping with ``register``: an item can be
    deleted again with the mapping's public interface, leaving the registry as it was.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS as registry

    previous = registry.get(PACKED_ATTENTION)
    registry[PACKED_ATTENTION] = packed_attention

    def undo() -> None:
        del registry[PACKED_ATTENTION]
        if previous is not None and registry.get(PACKED_ATTENTION) is not previous:
            registry[PACKED_ATTENTION] = previous

    return undo


_PACKED_REGISTRATION = _Shared(_register_packed_attention)


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


def _swap_rotary(module_name: str) -> Callable[[], None] | None:
    """Swap in ``_fast_rotary`` for the module's ``apply_rotary_pos_emb``; returns the undo."""
    module: Any = sys.modules.get(module_name)  # Any: its function is swapped below
    original = getattr(module, "apply_rotary_pos_emb", None)
    if original is None or hasattr(original, "tunelab_original"):
        return None  # not imported (no model of the type exists), or already the fast one
    module.apply_rotary_pos_emb = _fast_rotary(original)

    def undo() -> None:
        module.apply_rotary_pos_emb = original

    return undo


_ROTARY_SWAPS = {t: _Shared(functools.partial(_swap_rotary, name)) for t, name in _ROTARY_MODULES.items()}


# Gated MLPs computing down(silu(gate(x)) * up(x)), whose forward _mlp_forward repeats.
_SILU_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})


def _mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(_SiluMul.apply(self.gate_proj(x), self.up_proj(x)))


def _lean_mlp(m: Any) -> bool:
    return (type(m).__name__ in _SILU_MLPS
            and type(getattr(m, "act_fn", None)).__name__ in ("SiLUActivation", "SiLU"))


class _MallocParam(NamedTuple):
    """A glibc ``mallopt`` parameter (malloc.h) and the settings that can give its start value."""

    name: str
    number: int
    tunable: str  # in GLIBC_TUNABLES
    env: str  # the older environment variable


_M_MMAP_THRESHOLD = _MallocParam("M_MMAP_THRESHOLD", -3, "glibc.malloc.mmap_threshold", "MALLOC_MMAP_THRESHOLD_")
_M_TRIM_THRESHOLD = _MallocParam("M_TRIM_THRESHOLD", -1, "glibc.malloc.trim_threshold", "MALLOC_TRIM_THRESHOLD_")
# The start value of both thresholds when the environment sets none (the GNU C Library
# manual, "Malloc Tunable Parameters").
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024
# Blocks up to 32 MB (glibc's upper limit for the mmap threshold on 64-bit) come from the
# heap, and the heap is not trimmed below 1 GB.
_KEEP_FREED = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30))


@dataclass
class MallocTuning:
    """What the fast path asked of glibc's malloc, by parameter name (glibc cannot report it)."""

    in_effect: dict[str, int] = field(default_factory=dict)  # set while a context is open
    restored: dict[str, int] = field(default_factory=dict)  # set back when the last one closed


malloc_tuning = MallocTuning()


@functools.cache
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return None
    return libc


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt``; False off glibc or when glibc refuses the value."""
    libc = _glibc()
    return libc is not None and libc.mallopt(param, value) == 1


def _start_value(param: _MallocParam) -> int:
    """The value glibc started this process with: the environment's, else glibc's default.

    glibc has no call that reads a malloc parameter back, so this is the best previous
    value known here: one that other code set with ``mallopt`` after start-up cannot be
    seen, and closing the fast path sets the start value in its place.
    """
    tunables = dict(item.partition("=")[::2] for item in os.environ.get("GLIBC_TUNABLES", "").split(":"))
    # GLIBC_TUNABLES first: glibc reads both, and does not document which wins when both are set.
    for text in (tunables.get(param.tunable), os.environ.get(param.env)):
        if text is None:
            continue
        try:
            value = int(text, 0)
        except ValueError:  # not a number glibc would have taken either
            continue
        if 0 <= value < 2**31:  # mallopt takes a C int
            return value
    return _GLIBC_DEFAULT_THRESHOLD


def _keep_freed_memory() -> Callable[[], None] | None:
    """Let glibc reuse freed activation memory instead of returning it to the kernel.

    A training step frees and reallocates gigabytes of same-sized activations; with
    glibc's defaults, blocks above a (dynamic) threshold are mmap-ed and unmapped each
    time, and every reuse starts with page faults. Blocks up to 32 MB now come from the
    heap, which is not trimmed below 1 GB. Peak memory is unchanged (the same live
    tensors); only the kernel round trips go.

    Returns:
        The undo, which sets each parameter back to its start value (``_start_value``);
        None off glibc, where nothing was changed.
    """
    previous = {p.name: _start_value(p) for p, _ in _KEEP_FREED}
    done = [(p, value) for p, value in _KEEP_FREED if _mallopt(p.number, value)]
    if not done:
        return None
    malloc_tuning.in_effect = {p.name: value for p, value in done}

    def undo() -> None:
        restored = {p.name: previous[p.name] for p, _ in done if _mallopt(p.number, previous[p.name])}
        malloc_tuning.in_effect = {}
        malloc_tuning.restored = restored

    return undo


_MALLOC = _Shared(_keep_freed_memory)

_ABSENT = object()  # a module without a forward of its own (the usual case)


class _ModelPatches:
    """The fast path's changes to one model and its type's rotary function, made and undone as a unit."""

    def __init__(self, model: Any, packing: bool, fused_lora: bool) -> None:
        self.cfg = getattr(_inner(model), "config", None)
        self.packing = packing and supports_packing(model)
        lora = [m for m in model.modules() if _fusable(m)] if fused_lora else []
        mlps = [m for m in model.modules() if _lean_mlp(m)]
        norms = [m for m in model.modules() if _lean_norm(m)]
        self.counts = (len(lora), len(mlps), len(norms))
        self.forwards = ([(m, _fused_forward) for m in lora] + [(m, _mlp_forward) for m in mlps]
                         + [(m, _rmsnorm_forward) for m in norms])
        self.rotary = _ROTARY_SWAPS.get(getattr(self.cfg, "model_type", None) or "")
        self.rotary_held = False
        self._saved: tuple[Any, list[Any]] | None = None  # what apply replaced, while applied

    @property
    def applied(self) -> bool:
        return self._saved is not None

    def apply(self) -> bool:
        """Patch the model and take the rotary swap; returns whether the swap is on."""
        previous = [m.__dict__.get("forward", _ABSENT) for m, _ in self.forwards]
        self._saved = (getattr(self.cfg, "_attn_implementation", None), previous)
        if self.packing:
            assert self.cfg is not None  # packing requires a config (supports_packing)
            self.cfg._attn_implementation = PACKED_ATTENTION
        for m, forward in self.forwards:
            m.forward = types.MethodType(forward, m)
        self.rotary_held = self.rotary is not None and self.rotary.take()
        return self.rotary_held

    def remove(self) -> None:
        """Put back what ``apply`` replaced (a no-op when not applied)."""
        if self._saved is None:
            return
        old_impl, previous = self._saved
        self._saved = None
        for (m, _), forward in zip(self.forwards, previous, strict=True):
            if forward is _ABSENT:
                m.__dict__.pop("forward", None)
            else:
                m.forward = forward
        if self.packing:
            assert self.cfg is not None  # packing requires a config (supports_packing)
            self.cfg._attn_implementation = old_impl
        if self.rotary_held:
            assert self.rotary is not None  # held only when there is one
            self.rotary_held = False
            self.rotary.let_go()


@dataclass
class FastPath:
    """What ``fast_training`` switched on (for the run's log), and the way to pause it."""

    packing: bool
    fused_lora_layers: int
    lean_mlps: int = 0
    lean_norms: int = 0
    fast_rotary: bool = False
    _patches: _ModelPatches | None = field(default=None, repr=False, compare=False)

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
    def suspended(self) -> Iterator[None]:
        """Run the model as the library computes it while inside; the fast path returns on exit.

        The model's own forwards and attention implementation come back and the rotary
        swap is let go (the library's function returns unless another open context holds
        the swap for a model of the same type). The registry entry and the malloc
        settings stay. Costs one attribute assignment per patched module each way.
        """
        patches = self._patches
        if patches is None or not patches.applied:
            yield
            return
        patches.remove()
        try:
            yield
        finally:
            patches.apply()


@contextlib.contextmanager
def fast_training(model: Any, packing: bool = True, fused_lora: bool = True) -> Iterator[FastPath]:
    """Switch ``model`` to the fast path for the duration of a training run.

    Args:
        model: a transformers causal LM, possibly peft-wrapped.
        packing: use packed attention when the model supports it; batches must then be
            packed (``tunelab.train.batching.pack``) while inside the context.
        fused_lora: compute eligible LoRA linears with the fused function.

    Yields:
        A ``FastPath`` telling what is on. On exit, normal or by an exception, the model,
        the attention registry, the rotary function and the malloc settings are put back
        as the module docstring describes (the last two once no other context holds them).
    """
    patches = _ModelPatches(model, packing, fused_lora)
    with _MALLOC.held(), contextlib.ExitStack() as stack:
        if patches.packing:
            stack.enter_context(_PACKED_REGISTRATION.held())
        try:
            rotary = patches.apply()
            yield FastPath(patches.packing, *patches.counts, fast_rotary=rotary, _patches=patches)
        finally:
            patches.remove()


def is_packed(model: Any) -> bool:
    """Whether ``model`` currently runs packed attention (inside ``fast_training``)."""
    cfg = getattr(_inner(model), "config", None)
    return getattr(cfg, "_attn_implementation", None) == PACKED_ATTENTION
