"""The MLP's SiLU(gate) * up as one kernel on GPUs, reading the fused gate-and-up projection's output.

Why: the model runner computes gate and up as one GEMM (model_runner.py) and needs `silu(gate) * up` of its
two halves; eagerly that is two kernels (silu, then the multiply) and a round trip of the intermediate through
memory, 64 launches per decode step of the WiNGPT2-7B shape. The kernel reads both halves once, with the
roundings of transformers' `Qwen2MLP` (SiLU in float32 rounded to the input dtype, then the product rounded).

`silu_mul(gate_up)`: gate_up [rows, 2 * inner] (gate first) -> [rows, inner].
`python -m wingpt.engine.kernels.silu_mul` checks the kernel against the PyTorch path on a GPU.
"""

from __future__ import annotations

import functools
import sys

import torch
import torch.nn.functional as F

from wingpt.engine.kernels import cuda_time_ms, kernel_available


def reference(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    if kernel_available(gate_up.device.type) and gate_up.is_contiguous():
        return _triton(gate_up)
    return reference(gate_up)


@functools.cache
def _kernel() -> object:
    """The Triton JIT function, built on first use (triton is imported only on GPUs)."""
    import triton
    import triton.language as tl

    @triton.jit
    def silu_mul_kernel(x_ptr, out_ptr, inner, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = cols < inner
        gate = tl.load(x_ptr + row * 2 * inner + cols, mask=inside, other=0.0)
        up = tl.load(x_ptr + row * 2 * inner + inner + cols, mask=inside, other=0.0)
        g = gate.to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(gate.dtype).to(tl.float32)
        tl.store(out_ptr + row * inner + cols, (act * up.to(tl.float32)).to(gate.dtype), mask=inside)

    return silu_mul_kernel


def _triton(gate_up: torch.Tensor, block: int = 1024) -> torch.Tensor:
    import triton

    rows, width = gate_up.shape
    inner = width // 2
    out = torch.empty(rows, inner, dtype=gate_up.dtype, device=gate_up.device)
    if rows:
        _kernel()[(rows, triton.cdiv(inner, block))](gate_up, out, inner, BLOCK=block, num_warps=4)
    return out


def check(rows: int, inner: int = 11008, dtype: torch.dtype = torch.bfloat16) -> float:
    """Largest difference between the kernel and the reference on random data (GPU), relative to the value
    (at least 1); also times both."""
    torch.manual_seed(0)
    x = torch.randn(rows, 2 * inner, device="cuda", dtype=dtype) * 4
    slow = reference(x).float()
    worst = ((_triton(x).float() - slow).abs() / slow.abs().clamp(min=1)).max().item()
    times = {name: cuda_time_ms(fn, x, calls=50) * 1000 for name, fn in (("kernel", _triton), ("reference", reference))}
    print(f"rows {rows} inner {inner} {dtype}: max relative diff {worst:.4g}; kernel {times['kernel']:.0f} us, "
          f"reference {times['reference']:.0f} us")
    return worst


if __name__ == "__main__":
    # exp may differ from PyTorch's in its last float32 bit: one bf16 step (2**-7 relative) at most.
    sys.exit(0 if max(check(rows) for rows in (1, 64, 128, 1000)) <= 2 ** -7 else 1)
