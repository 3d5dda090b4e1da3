"""RMSNorm, and the residual add before it, as one kernel on GPUs.

Why: each of a step's 65 norms is five elementwise kernels and a reduction in eager PyTorch (cast, square,
mean, rsqrt, two multiplies), and the residual add before it one more; at 64 streams of the WiNGPT2-7B shape
they were ~1.5 ms of a 12.7 ms decode step (docs/benchmarks/h200.md). The kernel (the Triton language) reads
the row once and writes the sum and the normalised row, with the same roundings as transformers'
`Qwen2RMSNorm` (float32 inside, the normalised row rounded to the input dtype before the weight multiplies it).

`add_rms_norm(x, delta, weight, eps)` returns (x + delta, rms_norm(x + delta)); `delta` None means no add.
Elsewhere (CPU, no Triton language) the same computation runs in plain PyTorch.
`python -m wingpt.engine.kernels.rms_norm` checks the kernel against it on a GPU.
"""

from __future__ import annotations

import functools
import sys

import torch

from wingpt.engine.kernels import cuda_time_ms, kernel_available


def reference(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
              eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if delta is not None:
        x = x + delta
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return x, weight * h.to(x.dtype)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, delta [rows, hidden] (contiguous), weight [hidden]."""
    if kernel_available(x.device.type) and x.is_contiguous() and (delta is None or delta.is_contiguous()):
        return _triton(x, delta, weight, eps)
    return reference(x, delta, weight, eps)


@functools.cache
def _kernel() -> object:
    """The Triton JIT function, built on first use (triton is imported only on GPUs)."""
    import triton
    import triton.language as tl

    @triton.jit
    def add_rms_norm_kernel(x_ptr, delta_ptr, w_ptr, sum_ptr, out_ptr, hidden, eps,
                            HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        inside = cols < hidden
        x = tl.load(x_ptr + row * hidden + cols, mask=inside, other=0.0)
        if HAS_DELTA:
            # Rounded to the input dtype, as `x + delta` in PyTorch is, before the norm reads it.
            x = (x.to(tl.float32) + tl.load(delta_ptr + row * hidden + cols, mask=inside, other=0.0).to(tl.float32)
                 ).to(x.dtype)
            tl.store(sum_ptr + row * hidden + cols, x, mask=inside)
        h = x.to(tl.float32)
        h = h * tl.math.rsqrt(tl.sum(h * h, axis=0) / hidden + eps)
        w = tl.load(w_ptr + cols, mask=inside, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * hidden + cols, (w * h.to(x.dtype).to(tl.float32)).to(x.dtype), mask=inside)

    return add_rms_norm_kernel


def _triton(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
            eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    import triton

    rows, hidden = x.shape
    out = torch.empty_like(x)
    total = torch.empty_like(x) if delta is not None else x
    if rows:
        _kernel()[(rows,)](x, delta if delta is not None else x, weight, total, out, hidden, eps,
                           HAS_DELTA=delta is not None, BLOCK=triton.next_power_of_2(hidden), num_warps=8)
    return total, out


def check(rows: int, hidden: int = 4096, dtype: torch.dtype = torch.bfloat16) -> float:
    """Largest difference between the kernel and the reference on random data (GPU), with and without the add."""
    torch.manual_seed(0)
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype) * 3
    delta = torch.randn_like(x)
    weight = torch.randn(hidden, device="cuda", dtype=dtype)
    worst = 0.0
    for d in (None, delta):
        fast, slow = _triton(x, d, weight, 1e-6), reference(x, d, weight, 1e-6)
        worst = max(worst, *((a.float() - b.float()).abs().max().item() for a, b in zip(fast, slow, strict=True)))
    times = {name: cuda_time_ms(fn, x, delta, weight, 1e-6, calls=50) * 1000
             for name, fn in (("kernel", _triton), ("reference", reference))}
    print(f"rows {rows} hidden {hidden} {dtype}: max |diff| {worst:.4g}; add + norm kernel {times['kernel']:.0f} us, "
          f"reference {times['reference']:.0f} us")
    return worst


if __name__ == "__main__":
    # A different summation order may move a row's mean in its last float32 bit: one bf16 step at most.
    sys.exit(0 if max(check(rows) for rows in (1, 64, 128, 1000)) <= 0.0625 else 1)
