"""Rotary position embedding of q and k, and the write of k and v into the paged cache, as one kernel on GPUs.

Why: eagerly this is ~10 kernels per layer (rotate_half's negation and cat, four multiplies and two adds for
q and k, two `index_copy_` into the cache); at 64 streams of the WiNGPT2-7B shape they were ~1 ms of a 12.7 ms
decode step (docs/benchmarks/h200.md). The kernel reads q, k and v once, rounding as transformers'
`apply_rotary_pos_emb` does (each product to the input dtype, then their sum); on the H200 a few values still
differ from it by one bf16 step (h200/rotary_check.txt).

`rotate_and_store(q, k, v, cos, sin, k_cache, v_cache, slots)`: q [T, heads, D], k and v [T, kv_heads, D],
cos and sin [T, D]; writes rotated k and v at `slots` of the layer's caches ([slots, kv_heads, D]) and returns
(rotated q, rotated k), both [T, heads or kv_heads, D].
`python -m wingpt.engine.kernels.rotary` checks the kernel against the PyTorch path on a GPU.
"""

from __future__ import annotations

import functools
import sys

import torch
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from wingpt.engine.kernels import cuda_time_ms, kernel_available


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)  # cos [T, D] -> [T, 1, D] against [T, heads, D]
    k_cache.index_copy_(0, slots, k)
    v_cache.index_copy_(0, slots, v)
    return q, k


def rotate_and_store(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor,
                     slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if kernel_available(q.device.type):
        return _triton(q, k, v, cos, sin, k_cache, v_cache, slots)
    return reference(q, k, v, cos, sin, k_cache, v_cache, slots)


@functools.cache
def _kernel() -> object:
    """The Triton JIT function, built on first use (triton is imported only on GPUs)."""
    import triton
    import triton.language as tl

    @triton.jit
    def rotary_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, q_out, k_out, k_cache, v_cache, slots_ptr,
                      stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ct,
                      stride_cs, stride_ch, HEADS: tl.constexpr, HALF: tl.constexpr):
        t = tl.program_id(0)
        head = tl.program_id(1)  # 0..HEADS-1: a query head; HEADS..: a key/value head
        lo = tl.arange(0, HALF)
        c_lo = tl.load(cos_ptr + t * stride_ct + lo).to(tl.float32)
        c_hi = tl.load(cos_ptr + t * stride_ct + HALF + lo).to(tl.float32)
        s_lo = tl.load(sin_ptr + t * stride_ct + lo).to(tl.float32)
        s_hi = tl.load(sin_ptr + t * stride_ct + HALF + lo).to(tl.float32)
        if head < HEADS:
            src = q_ptr + t * stride_qt + head * stride_qh
            dst = q_out + (t * HEADS + head) * (2 * HALF)
        else:
            kv = head - HEADS
            src = k_ptr + t * stride_kt + kv * stride_kh
            dst = k_out + (t * (tl.num_programs(1) - HEADS) + kv) * (2 * HALF)
        x1 = tl.load(src + lo)
        x2 = tl.load(src + HALF + lo)
        dtype = x1.dtype
        # (x * cos) + (rotate_half(x) * sin), each product rounded to the input dtype as in PyTorch.
        a_lo = (x1.to(tl.float32) * c_lo).to(dtype).to(tl.float32)
        b_lo = (-x2.to(tl.float32) * s_lo).to(dtype).to(tl.float32)
        a_hi = (x2.to(tl.float32) * c_hi).to(dtype).to(tl.float32)
        b_hi = (x1.to(tl.float32) * s_hi).to(dtype).to(tl.float32)
        out_lo = (a_lo + b_lo).to(dtype)
        out_hi = (a_hi + b_hi).to(dtype)
        tl.store(dst + lo, out_lo)
        tl.store(dst + HALF + lo, out_hi)
        if head >= HEADS:
            kv = head - HEADS
            slot = tl.load(slots_ptr + t).to(tl.int64)
            cache = slot * stride_cs + kv * stride_ch
            tl.store(k_cache + cache + lo, out_lo)
            tl.store(k_cache + cache + HALF + lo, out_hi)
            vsrc = v_ptr + t * stride_vt + kv * stride_vh
            tl.store(v_cache + cache + lo, tl.load(vsrc + lo))
            tl.store(v_cache + cache + HALF + lo, tl.load(vsrc + HALF + lo))

    return rotary_kernel


def _triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, heads, dim = q.shape
    kv_heads = k.shape[1]
    q_out = torch.empty(tokens, heads, dim, dtype=q.dtype, device=q.device)
    k_out = torch.empty(tokens, kv_heads, dim, dtype=k.dtype, device=k.device)
    if tokens:
        _kernel()[(tokens, heads + kv_heads)](
            q, k, v, cos, sin, q_out, k_out, k_cache, v_cache, slots,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), cos.stride(0),
            k_cache.stride(0), k_cache.stride(1), HEADS=heads, HALF=dim // 2, num_warps=1)
    return q_out, k_out


def check(tokens: int, heads: int = 32, kv_heads: int = 32, dim: int = 128,
          dtype: torch.dtype = torch.bfloat16) -> float:
    """Largest difference between the kernel and the reference (outputs and cache contents) on random data."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    q = torch.randn(tokens, heads, dim, device=dev, dtype=dtype)
    k = torch.randn(tokens, kv_heads, dim, device=dev, dtype=dtype)
    v = torch.randn_like(k)
    angles = torch.rand(tokens, dim // 2, device=dev) * 100
    cos = torch.cat([angles.cos()] * 2, dim=-1).to(dtype)
    sin = torch.cat([angles.sin()] * 2, dim=-1).to(dtype)
    slots = torch.randperm(4 * tokens, device=dev)[:tokens]
    caches = [torch.zeros(4 * tokens, kv_heads, dim, device=dev, dtype=dtype) for _ in range(4)]
    fast = _triton(q, k, v, cos, sin, caches[0], caches[1], slots)
    slow = reference(q, k, v, cos, sin, caches[2], caches[3], slots)
    pairs = [*zip(fast, slow, strict=True), (caches[0], caches[2]), (caches[1], caches[3])]
    worst = max((a.float() - b.float()).abs().max().item() for a, b in pairs)
    times = {name: cuda_time_ms(fn, q, k, v, cos, sin, caches[0], caches[1], slots, calls=50) * 1000
             for name, fn in (("kernel", _triton), ("reference", reference))}
    print(f"tokens {tokens} heads {heads}/{kv_heads} dim {dim} {dtype}: max |diff| {worst:.4g}; kernel "
          f"{times['kernel']:.0f} us, reference {times['reference']:.0f} us")
    return worst


if __name__ == "__main__":
    # Measured on the H200: at most one bf16 step (0.03 at these values' magnitude) from the PyTorch path.
    sys.exit(0 if max(*(check(n) for n in (1, 64, 128, 2000)), check(64, kv_heads=4)) <= 0.0625 else 1)
