"""One step of the model over the paged KV cache: a flat batch of chunks from many sequences.

The forward is written here against the weights of transformers' Qwen2 modules (embeddings, per-layer
projections, norms, MLP, rotary embedding, head), not through the model's own `forward`: the cache layout,
the attention over block tables and the shapes (for CUDA graphs) are ours, and nothing depends on the
library's cache classes, which change between the GPU machine's 5.17 and the CPU's 5.23.

All tokens of a step go through the projections and MLPs as one [tokens, hidden] matrix; q, k and v are one
GEMM, and gate and up another (at construction their weights are packed into one matrix each and the
modules' own weights become views of it, so memory is not doubled and the model object still works as
transformers' model). A decode step at small batches only reads weights: one large GEMM reads them faster
than three small ones (docs/benchmarks/h200.md). Attention:
- one-token chunks (decodes) together, one call per layer over the rows' block tables (kernels/paged_attention.py:
  a kernel on GPUs that reads each key once from its block; gather + masked SDPA elsewhere);
- a chunk starting at 0 (a fresh prefill) attends causally to its own keys;
- any other chunk (a continued prefill, or a prompt after a reused prefix) gathers its cached context.
The head runs only on the rows whose next token is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wingpt.engine.kernels.paged_attention import context_slots, decode_attention
from wingpt.engine.kernels.rms_norm import add_rms_norm
from wingpt.engine.kernels.rotary import rotate_and_store
from wingpt.engine.kernels.silu_mul import silu_mul
from wingpt.engine.scheduler import Chunk

# A token not yet known on the host: the sample of a step still running (engine.py, overlap). Its sequence's
# `pending` names its row in that step's sampled tokens, from which the device fills it in.
PENDING_TOKEN = -1


def kv_bytes_per_token(config: object, dtype: torch.dtype) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    size = torch.empty(0, dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * size


@dataclass
class StepInputs:
    """Device tensors describing one step (built on the host, copied once)."""

    tokens: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    slots: torch.Tensor  # [T] where each token's K/V is written
    decode_rows: int  # the first `decode_rows` tokens are one-token chunks
    decode_tables: torch.Tensor | None  # [decode_rows, W] each decode row's block ids (padded)
    decode_lengths: torch.Tensor | None  # [decode_rows] each decode row's context length, its new token included
    prefills: list[tuple[int, int, int, torch.Tensor | None]]  # (offset in T, length, start, context slots)
    logit_rows: torch.Tensor  # [N] rows of T whose logits are wanted
    sample_rows: torch.Tensor  # [N] for each logit row, its sequence's row of the engine's token history
    sample_cols: torch.Tensor  # [N] and the position its sampled token takes there


def upload(values: list[int] | list[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list on the device without waiting for the GPU: a copy from pageable memory waits for the
    stream's work to finish, which would stall the engine's overlap of host and GPU; from pinned memory it
    is queued like a kernel."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def upload_parts(parts: list[list[int]], device: torch.device) -> list[torch.Tensor]:
    """Several index lists on the device in one `upload`, each view starting 16-byte aligned (the Triton
    kernels are compiled per pointer alignment: an odd offset would compile, and run, slower variants)."""
    flat: list[int] = []
    for part in parts:
        flat += part + [0] * (len(part) % 2)
    on_device = upload(flat, torch.long, device)
    views, offset = [], 0
    for part in parts:
        views.append(on_device[offset:offset + len(part)])
        offset += len(part) + len(part) % 2
    return views


def _fuse(owner: torch.nn.Module, linears: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for projections of the same input; the modules' weights become views of it.
    Kept on `owner`, so that a second engine on the same model object reuses it instead of copying again."""
    fused = getattr(owner, "_wingpt_fused", None)
    if fused is not None and fused[0].data_ptr() == linears[0].weight.data_ptr():
        return fused
    weight = torch.cat([m.weight.data for m in linears])
    bias = torch.cat([m.bias.data for m in linears]) if all(m.bias is not None for m in linears) else None
    offset = 0
    for m in linears:
        m.weight.data = weight[offset:offset + m.out_features]
        if bias is not None:
            m.bias.data = bias[offset:offset + m.out_features]
        offset += m.out_features
    owner._wingpt_fused = (weight, bias)
    return weight, bias


class ModelRunner:
    def __init__(self, model: torch.nn.Module, num_blocks: int, block_size: int) -> None:
        self.model = model
        self.decoder = model.model
        config = model.config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.block_size = block_size
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.head_dim ** -0.5
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ValueError(f"the model runner implements Qwen2's SiLU MLP, not {config.hidden_act!r}")
        # One block past the pool: padding rows of a CUDA graph write and attend there.
        self.scratch_block = num_blocks
        self.scratch_slot = num_blocks * block_size
        shape = (config.num_hidden_layers, (num_blocks + 1) * block_size, self.kv_heads, self.head_dim)
        self.k_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            self.qkv = [_fuse(layer.self_attn, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj])
                        for layer in self.decoder.layers]
            self.gate_up = [_fuse(layer.mlp, [layer.mlp.gate_proj, layer.mlp.up_proj])[0]
                            for layer in self.decoder.layers]

    # ------------------------------------------------------------------------------------ inputs
    def _tables(self, tables: list[list[int]], lengths: list[int]) -> list[list[int]]:
        """Block ids [rows][blocks of the longest] covering each row's first `length` positions (padded with 0)."""
        blocks = -(-max(lengths) // self.block_size)
        return [t[:blocks] + [0] * (blocks - len(t[:blocks])) for t in tables]

    def prepare(self, chunks: list[Chunk], pending: torch.Tensor | None = None) -> tuple[StepInputs, list[Chunk]]:
        """The step's tensors, and the chunks in the order their tokens take in it. `pending`: the sampled
        tokens of the step still running, for the sequences whose last token is one of them."""
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logit_rows: list[int] = []
        sample_rows: list[int] = []
        sample_cols: list[int] = []
        fill_at: list[int] = []  # rows of T whose token comes from `pending`
        fill_from: list[int] = []
        decodes = [c for c in chunks if c.length == 1]
        others = [c for c in chunks if c.length > 1]
        bs = self.block_size
        for chunk in decodes + others:
            seq, start, table = chunk.seq, chunk.start, chunk.seq.block_table
            tokens += seq.tokens[start:start + chunk.length]
            positions += range(start, start + chunk.length)
            slots += [table[p // bs] * bs + p % bs for p in range(start, start + chunk.length)]
            if seq.pending >= 0 and start + chunk.length == len(seq.tokens):
                fill_at.append(len(tokens) - 1)
                fill_from.append(seq.pending)
            if chunk.completes:
                logit_rows.append(len(tokens) - 1)
                sample_rows.append(seq.seen_row)
                sample_cols.append(len(seq.tokens))
        parts = [tokens, positions, slots, logit_rows, sample_rows, sample_cols, fill_at, fill_from]
        width = 0
        if decodes:
            lengths = [c.start + 1 for c in decodes]
            tables = self._tables([c.seq.block_table for c in decodes], lengths)
            width = len(tables[0])
            parts += [lengths, [b for row in tables for b in row]]
        spans = []
        offset = len(decodes)
        for c in others:
            if c.start:
                length = c.start + c.length
                table = torch.tensor(self._tables([c.seq.block_table], [length]))
                parts.append(context_slots(table, torch.tensor([length]), bs)[0][0, :length].tolist())
            spans.append((offset, c.length, c.start))
            offset += c.length
        device = upload_parts(parts, self.device)  # every index tensor of the step in one copy
        tokens_t, positions_t, slots_t, logit_t, rows_t, cols_t, fill_at_t, fill_from_t = device[:8]
        if fill_at:
            assert pending is not None, "a pending token without its step's samples"
            tokens_t.index_copy_(0, fill_at_t, pending.index_select(0, fill_from_t))
        rest = iter(device[8:])
        decode_lengths = next(rest) if decodes else None
        decode_tables = next(rest).view(len(decodes), width) if decodes else None
        prefills = [(o, n, start, next(rest) if start else None) for o, n, start in spans]
        return StepInputs(tokens_t, positions_t, slots_t, len(decodes), decode_tables, decode_lengths, prefills,
                          logit_t, rows_t, cols_t), decodes + others

    # ------------------------------------------------------------------------------------ forward
    @torch.inference_mode()
    def forward(self, step: StepInputs) -> torch.Tensor:
        """Logits [len(step.logit_rows), vocab] in float32."""
        x = self.decoder.embed_tokens(step.tokens)  # [T, hidden]
        cos, sin = (c[0] for c in self.decoder.rotary_emb(x[None], step.positions[None]))  # [T, head_dim]
        layers = self.decoder.layers
        # Each residual add is fused with the norm that follows it (kernels/rms_norm.py): h is the next block's input.
        x, h = add_rms_norm(x, None, *_norm(layers[0].input_layernorm))
        for index, layer in enumerate(layers):
            attention = self._attention(layer, index, h, cos, sin, step)
            x, h = add_rms_norm(x, attention, *_norm(layer.post_attention_layernorm))
            mlp = layer.mlp.down_proj(silu_mul(F.linear(h, self.gate_up[index])))
            if index + 1 < len(layers):
                x, h = add_rms_norm(x, mlp, *_norm(layers[index + 1].input_layernorm))
            else:
                x = x + mlp
        _, x = add_rms_norm(x.index_select(0, step.logit_rows), None, *_norm(self.decoder.norm))
        return self.model.lm_head(x).float()

    def _attention(self, layer: torch.nn.Module, index: int, h: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, step: StepInputs) -> torch.Tensor:
        attn = layer.self_attn
        tokens = h.shape[0]
        qkv = F.linear(h, *self.qkv[index])
        q_width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        q = qkv[:, :q_width].view(tokens, self.heads, self.head_dim)
        k = qkv[:, q_width:q_width + kv_width].view(tokens, self.kv_heads, self.head_dim)
        v = qkv[:, q_width + kv_width:].view(tokens, self.kv_heads, self.head_dim)
        k_cache, v_cache = self.k_cache[index], self.v_cache[index]
        # Rotary on q and k, and k and v into the cache at the step's slots (kernels/rotary.py).
        q, k = rotate_and_store(q, k, v, cos, sin, k_cache, v_cache, step.slots)  # [T, heads | kv_heads, D]
        d = step.decode_rows
        if not step.prefills:  # decodes only: their attention is the whole output, no copy into a joint one
            rows = decode_attention(q, k_cache, v_cache, step.decode_tables, step.decode_lengths, self.block_size,
                                    self.scale)  # [T, heads, D]
            return attn.o_proj(rows.reshape(tokens, self.heads * self.head_dim))
        q = q.transpose(0, 1)  # [heads, T, D]
        out = torch.empty_like(q)
        gqa = self.heads != self.kv_heads
        if d:
            rows = decode_attention(q[:, :d].transpose(0, 1), k_cache, v_cache, step.decode_tables,
                                    step.decode_lengths, self.block_size, self.scale)  # [d, heads, D]
            out[:, :d] = rows.transpose(0, 1)
        for offset, length, start, context in step.prefills:
            qs = q[None, :, offset:offset + length]
            if context is None:
                keys = k[offset:offset + length].transpose(0, 1)[None]
                values = v[offset:offset + length].transpose(0, 1)[None]
                rows = F.scaled_dot_product_attention(qs, keys, values, is_causal=True, scale=self.scale,
                                                      enable_gqa=gqa)
            else:
                keys = k_cache[context].transpose(0, 1)[None]
                values = v_cache[context].transpose(0, 1)[None]
                allowed = (torch.arange(start + length, device=self.device)[None, :]
                           <= torch.arange(start, start + length, device=self.device)[:, None])
                rows = F.scaled_dot_product_attention(qs, keys, values, attn_mask=allowed, scale=self.scale,
                                                      enable_gqa=gqa)
            out[:, offset:offset + length] = rows[0]
        return attn.o_proj(out.transpose(0, 1).reshape(tokens, self.heads * self.head_dim))


def _norm(module: torch.nn.Module) -> tuple[torch.Tensor, float]:
    """A Qwen2RMSNorm's weight and epsilon."""
    return module.weight, module.variance_epsilon
