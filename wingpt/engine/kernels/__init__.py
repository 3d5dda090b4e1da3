"""GPU kernels of the model runner, in the Triton language, each beside the plain-PyTorch computation it
replaces (the CPU path, and what `python -m wingpt.engine.kernels.<name>` checks it against on a GPU).

Where the Triton language or CUDA is missing, the PyTorch path runs: CI (CPU) tests that path and everything
around the kernels; the kernels themselves are checked on a GPU (docs/benchmarks/h200.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


@functools.cache
def kernel_available(device_type: str) -> bool:
    if device_type != "cuda":
        return False
    try:
        import triton  # noqa: F401  (the GPU image ships it with torch)
    except ImportError:
        return False
    return True


def cuda_time_ms(fn: Callable[..., object], *args: object, calls: int = 20) -> float:
    """Milliseconds per call on the GPU (CUDA events over `calls` calls after 3 warm-up calls): the checks'
    timings."""
    for _ in range(3):
        fn(*args)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn(*args)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls
