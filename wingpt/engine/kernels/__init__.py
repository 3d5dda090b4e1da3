"""GPU kernels of the model runner, in the Triton language, each beside the plain-PyTorch computation it
replaces (the CPU path, and what `python -m wingpt.engine.kernels.<name>` checks it against on a GPU).

Where the Triton language or CUDA is missing, the PyTorch path runs: CI (CPU) tests that path and everything
around the kernels; the kernels themselves are checked on a GPU (docs/benchmarks/h200.md).
"""

from __future__ import annotations

import functools


@functools.cache
def kernel_available(device_type: str) -> bool:
    if device_type != "cuda":
        return False
    try:
        import triton  # noqa: F401  (the GPU image ships it with torch)
    except ImportError:
        return False
    return True
