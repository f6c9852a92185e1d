"""What this machine computes fast: measured, not assumed.

bf16 halves memory and, on hardware with bf16 matrix units (recent GPUs, CPUs with
AMX), runs matmuls faster. On other CPUs bf16 matmuls run slower than fp32 (on the
2-core AVX-512 machine this project is built on, which has AVX512-BF16 but no AMX, a
1024x1024 bf16 matmul ran at about 0.6x the fp32 rate; small matrices can differ, so the
measurement uses 1024). So ``model.dtype: auto`` measures a bf16 and an fp32 matmul,
once per process, and picks bf16 only where it is clearly faster.
"""

from __future__ import annotations

import functools
import time

# bf16 must beat fp32 by this factor to be chosen: the gain has to pay for its precision.
BF16_MIN_SPEEDUP = 1.3


def _best_seconds(fn, reps: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@functools.cache
def bf16_speedup(n: int = 1024, reps: int = 3) -> float:
    """fp32 matmul time / bf16 matmul time on this process's device (CPU or CUDA 0)."""
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    # A generator of its own: the measurement must not move the global RNG, which seeds
    # the adapter's initialization and dropout right after the model loads.
    g = torch.Generator().manual_seed(0)
    a32 = torch.randn(n, n, generator=g).to(dev)
    b32 = torch.randn(n, n, generator=g).to(dev)
    a16, b16 = a32.to(torch.bfloat16), b32.to(torch.bfloat16)

    def run(a, b):
        def f():
            a @ b
            if dev == "cuda":
                torch.cuda.synchronize()
        return f

    return _best_seconds(run(a32, b32), reps) / _best_seconds(run(a16, b16), reps)


def resolve_dtype(dtype: str) -> str:
    """``auto`` becomes ``bfloat16`` where bf16 matmuls are measured faster, else ``float32``."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if bf16_speedup() >= BF16_MIN_SPEEDUP else "float32"
