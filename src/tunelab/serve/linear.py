"""A faster linear layer for decoding: few rows, computed as ``(W @ x^T)^T``.

While decoding, each ``nn.Linear`` multiplies a handful of rows (one per sequence) by a
large weight. On this project's CPU (MKL sgemm, 2 cores) ``F.linear`` is slow for that
shape, and the same product taken the other way round, ``W @ x^T``, is not. Measured per
call, fp32, SmolLM2-135M's shapes, 16 rows: q/o 174 -> 125 us, gate/up 451 -> 322 us,
down 435 -> 310 us, the LM head (49,152 x 576) 25.3 -> 16.2 ms; 4 rows: LM head 19.6 ->
7.1 ms. One row, or many (prefill, training), gain nothing, so they keep ``F.linear``.

``fast_decode_linears(model)`` gives every plain ``nn.Linear`` of a model (PEFT's base
layers included) a forward that takes this path only while ``decoding()`` is active on
the calling thread, with no gradient, and for at most ``MAX_ROWS`` rows. Everything else
(training, evaluation in other threads, prefill) runs ``F.linear`` as before. The result
is the same product; the summation order inside MKL may differ in the last bits, as it
already does between batch sizes.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

MAX_ROWS = 32  # rows per call up to which W @ x^T is faster (measured: 2, 4, 16; 64 is even)
_state = threading.local()


@contextlib.contextmanager
def decoding() -> Iterator[None]:
    """Within this block, on this thread, patched linears take the few-rows path."""
    before = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = before


# Layers whose output only meets elementwise ops and matrix products in Hugging Face's
# decoders (the residual add, the MLP's gate, the logits): their product may stay in the
# transposed layout it is computed in. Any other layer's output is copied to the usual
# layout: q/k/v in a transposed layout send attention to its slow math kernel, and an
# unknown architecture may ``view`` an output in a way a transposed tensor cannot take.
KEEP_TRANSPOSED = frozenset({"lm_head", "o_proj", "down_proj", "gate_proj", "up_proj"})


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1] if x.dim() >= 2 else 0
    if (1 < rows <= MAX_ROWS and getattr(_state, "on", False) and not torch.is_grad_enabled()
            and x.dtype == self.weight.dtype):
        y = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).t()).t()
        if not self._tunelab_transposed_ok:
            y = y.contiguous()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.weight.shape[0])
    return F.linear(x, self.weight, self.bias)


def fast_decode_linears(model: Any) -> int:
    """Patch every plain ``nn.Linear`` of ``model`` (once); returns how many were patched."""
    n = 0
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear and not getattr(module, "_tunelab_fast", False):
            parts = name.split(".")
            role = parts[-2] if parts[-1] == "base_layer" and len(parts) > 1 else parts[-1]
            module._tunelab_transposed_ok = role in KEEP_TRANSPOSED  # PEFT: the wrapper's name
            module.forward = types.MethodType(_forward, module)
            module._tunelab_fast = True
            n += 1
    return n
