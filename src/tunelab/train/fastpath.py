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

The kernels themselves are in ``tunelab.train.kernels``; this module decides where they
apply and owns every change of state. All are exact rewrites, not approximations: ``tests/unit/train/test_fastpath.py``
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

from tunelab.train.kernels import (
    _fast_rotary,
    _fusable,
    _fused_forward,
    _lean_mlp,
    _lean_norm,
    _mlp_forward,
    _rmsnorm_forward,
    packed_attention,
)

PACKED_ATTENTION = "tunelab_packed"

# Model types whose attention modules call the registered attention function with
# (query, key, value, mask, dropout, scaling[, sliding_window]) and nothing else that
# SDPA cannot express. Each has a packed-vs-padded equality test.
PACKABLE_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma3_text",
})


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
