"""Decode attention straight over the paged KV cache: one query token per row, keys found by block table.

Why a kernel: gathering each row's keys and values into a dense, padded tensor per layer and then calling
`scaled_dot_product_attention` writes and reads every context twice more than attention needs. At 64 streams
of the WiNGPT2-7B shape (32 KV heads, 512 KiB of KV per token) that is several GB of extra traffic per step,
more than the weights. The kernel (the Triton language, CUDA only) reads each key and value once from its
block, with an online softmax, for any context length up to the row's own (a loop bound read from memory,
so one CUDA graph serves every length in its bucket).

`reference` is the same computation in plain PyTorch (gather + masked SDPA): the CPU path, and what the
kernel is checked against on a GPU (`python -m wingpt.engine.kernels.paged_attention`).

Few rows (a lone stream) would leave most of the GPU idle, each program walking a whole context; then each
row's context is cut into parts run side by side (split-K, "flash decoding"), and a second small kernel
combines their partial softmax results.

Layout: a layer's cache is [slots, kv_heads, head_dim] with slot = block * block_size + offset; `tables`
[rows, width] holds each row's block ids (padded with any valid block), `lengths` [rows] its context length
(>= 1, the new token's own key included).
"""

from __future__ import annotations

import functools
import sys

import torch
import torch.nn.functional as F

from wingpt.engine.kernels import cuda_time_ms, kernel_available


def context_slots(tables: torch.Tensor, lengths: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots [rows, width * block_size] of each row's positions, and which of them are within its length."""
    pos = torch.arange(tables.shape[1] * block_size, device=tables.device)
    slots = tables[:, pos // block_size] * block_size + pos % block_size
    return slots, pos[None, :] < lengths[:, None]


def reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
              lengths: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """q [rows, heads, D] -> [rows, heads, D]."""
    slots, mask = context_slots(tables, lengths, block_size)
    keys = k_cache[slots].permute(0, 2, 1, 3)  # [rows, kv_heads, K, D]
    values = v_cache[slots].permute(0, 2, 1, 3)
    out = F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=mask[:, None, None, :], scale=scale,
                                         enable_gqa=q.shape[1] != k_cache.shape[1])
    return out[:, :, 0]


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
                     lengths: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """The kernel on a GPU that has the Triton language, else the reference."""
    if kernel_available(q.device.type):
        return _triton_decode(q, k_cache, v_cache, tables, lengths, block_size, scale)
    return reference(q, k_cache, v_cache, tables, lengths, block_size, scale)


@functools.cache
def _kernel() -> object:
    """The Triton JIT functions, built on first use (triton is imported only on GPUs)."""
    import triton
    import triton.language as tl

    @triton.jit
    def paged_decode(q_ptr, k_ptr, v_ptr, o_ptr, acc_ptr, m_ptr, l_ptr, tables_ptr, lengths_ptr, scale, split_len,
                     stride_qr, stride_qh, stride_ks, stride_kh, stride_tr, stride_or, stride_oh,
                     GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, TILE: tl.constexpr,
                     SPLIT: tl.constexpr):
        """Attention of one (row, head) over positions [part * split_len, (part + 1) * split_len) of its
        context. SPLIT: the running maximum, the sum of exponentials and the unnormalised output of the part,
        for `combine`; else (one part) the output itself."""
        row = tl.program_id(0)
        head = tl.program_id(1)
        part = tl.program_id(2)
        kv_head = head // GROUP
        lo = part * split_len
        hi = tl.minimum(tl.load(lengths_ptr + row), lo + split_len)
        d = tl.arange(0, HEAD_DIM)
        q = tl.load(q_ptr + row * stride_qr + head * stride_qh + d).to(tl.float32) * scale
        m = float("-inf")
        total = 0.0
        acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
        for start in range(lo, hi, TILE):
            pos = start + tl.arange(0, TILE)
            valid = pos < hi
            block = tl.load(tables_ptr + row * stride_tr + pos // BLOCK_SIZE, mask=valid, other=0)
            offsets = (block * BLOCK_SIZE + pos % BLOCK_SIZE).to(tl.int64)[:, None] * stride_ks \
                + kv_head * stride_kh + d[None, :]
            k = tl.load(k_ptr + offsets, mask=valid[:, None], other=0.0).to(tl.float32)
            scores = tl.where(valid, tl.sum(k * q[None, :], axis=1), float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=0))
            p = tl.exp(scores - m_new)
            alpha = tl.exp(m - m_new)
            v = tl.load(v_ptr + offsets, mask=valid[:, None], other=0.0).to(tl.float32)
            total = total * alpha + tl.sum(p, axis=0)
            acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
            m = m_new
        if SPLIT:
            at = (row * tl.num_programs(1) + head) * tl.num_programs(2) + part
            tl.store(acc_ptr + at * HEAD_DIM + d, acc)
            tl.store(m_ptr + at, m)
            tl.store(l_ptr + at, total)
        else:
            tl.store(o_ptr + row * stride_or + head * stride_oh + d, (acc / total).to(o_ptr.dtype.element_ty))

    @triton.jit
    def combine(acc_ptr, m_ptr, l_ptr, o_ptr, parts, stride_or, stride_oh,
                HEAD_DIM: tl.constexpr, PARTS: tl.constexpr):
        """One (row, head)'s output from its parts' partial results (an empty part has m = -inf, l = 0)."""
        row = tl.program_id(0)
        head = tl.program_id(1)
        base = (row * tl.num_programs(1) + head) * parts
        k = tl.arange(0, PARTS)
        inside = k < parts
        m = tl.load(m_ptr + base + k, mask=inside, other=float("-inf"))
        weight = tl.exp(m - tl.max(m, axis=0))
        total = tl.sum(tl.load(l_ptr + base + k, mask=inside, other=0.0) * weight, axis=0)
        d = tl.arange(0, HEAD_DIM)
        acc = tl.load(acc_ptr + (base + k)[:, None] * HEAD_DIM + d[None, :], mask=inside[:, None], other=0.0)
        out = tl.sum(acc * weight[:, None], axis=0) / total
        tl.store(o_ptr + row * stride_or + head * stride_oh + d, out.to(o_ptr.dtype.element_ty))

    return paged_decode, combine


def split_count(rows: int, heads: int, context: int, min_part: int = 64, programs: int = 1024) -> int:
    """Parts each row's context is cut into: enough (row, head, part) programs to fill the GPU when rows are few
    (one row alone is 32 programs, a fraction of an H200's 132 SMs, each walking the whole context), never parts
    shorter than `min_part` positions. A function of shapes only, so a CUDA graph keeps it."""
    return max(1, min(-(-programs // (rows * heads)), context // min_part))


def _triton_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
                   lengths: torch.Tensor, block_size: int, scale: float, tile: int = 128,
                   num_warps: int = 4, parts: int | None = None) -> torch.Tensor:
    import triton

    rows, heads, head_dim = q.shape
    kv_heads = k_cache.shape[1]
    context = tables.shape[1] * block_size  # the longest length the tables can hold
    parts = parts or split_count(rows, heads, context)
    split_len = -(-context // parts)
    out = torch.empty_like(q)
    acc = m = total = out  # not read when there is one part
    if parts > 1:
        acc = torch.empty(rows, heads, parts, head_dim, dtype=torch.float32, device=q.device)
        m = torch.empty(rows, heads, parts, dtype=torch.float32, device=q.device)
        total = torch.empty_like(m)
    decode, combine = _kernel()
    decode[(rows, heads, parts)](
        q, k_cache, v_cache, out, acc, m, total, tables, lengths, scale, split_len,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), tables.stride(0), out.stride(0),
        out.stride(1), GROUP=heads // kv_heads, BLOCK_SIZE=block_size, HEAD_DIM=head_dim, TILE=tile,
        SPLIT=parts > 1, num_warps=num_warps,
    )
    if parts > 1:
        combine[(rows, heads)](acc, m, total, out, parts, out.stride(0), out.stride(1),
                               HEAD_DIM=head_dim, PARTS=triton.next_power_of_2(parts), num_warps=1)
    return out


def check(rows: int = 64, heads: int = 32, kv_heads: int = 32, head_dim: int = 128, block_size: int = 32,
          max_len: int = 700, dtype: torch.dtype = torch.bfloat16) -> float:
    """Largest difference between the kernel and the reference on random data (GPU); also times both."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    num_blocks = rows * (-(-max_len // block_size)) + 8
    k_cache = torch.randn(num_blocks * block_size, kv_heads, head_dim, device=dev, dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    lengths = torch.randint(1, max_len + 1, (rows,), device=dev)
    lengths[0], lengths[-1] = 1, max_len
    width = -(-max_len // block_size)
    tables = torch.randperm(num_blocks, device=dev)[: rows * width].view(rows, width)
    q = torch.randn(rows, heads, head_dim, device=dev, dtype=dtype)
    scale = head_dim ** -0.5
    fast = _triton_decode(q, k_cache, v_cache, tables, lengths, block_size, scale)
    slow = reference(q, k_cache, v_cache, tables, lengths, block_size, scale)
    diff = (fast.float() - slow.float()).abs().max().item()
    timings = {name: cuda_time_ms(fn, q, k_cache, v_cache, tables, lengths, block_size, scale)
               for name, fn in (("kernel", _triton_decode), ("reference", reference))}
    for tile, warps, parts in ((64, 4, None), (128, 8, None), (128, 4, 1), (64, 4, 1)):
        name = f"kernel tile {tile} warps {warps} parts {parts or 'auto'}"
        timings[name] = cuda_time_ms(functools.partial(_triton_decode, tile=tile, num_warps=warps, parts=parts),
                                     q, k_cache, v_cache, tables, lengths, block_size, scale)
    forced = _triton_decode(q, k_cache, v_cache, tables, lengths, block_size, scale, parts=7)  # uneven parts
    diff = max(diff, (forced.float() - slow.float()).abs().max().item())
    kv_bytes = 2 * int(lengths.sum()) * kv_heads * head_dim * k_cache.element_size()
    print(f"rows {rows} heads {heads}/{kv_heads} head_dim {head_dim} block {block_size} {dtype}: max |diff| "
          f"{diff:.4g}; kernel {timings['kernel'] * 1000:.0f} us ({kv_bytes / timings['kernel'] / 1e6:.0f} GB/s of "
          f"KV), reference {timings['reference'] * 1000:.0f} us")
    print("  " + ", ".join(f"{k} {v * 1000:.0f} us" for k, v in timings.items() if k.startswith("kernel ")))
    return diff


if __name__ == "__main__":
    worst = max(check(rows=r, kv_heads=k, block_size=b, max_len=n)
                for r, k, b, n in ((1, 32, 32, 300), (64, 32, 32, 300), (64, 32, 32, 700), (128, 32, 32, 300),
                                   (64, 4, 32, 300), (8, 32, 16, 700)))
    sys.exit(0 if worst < 2e-2 else 1)
