"""One step of the model over the paged KV cache: a flat batch of chunks from many sequences.

The forward is written here against the weights of transformers' Qwen2 modules (embeddings, per-layer
projections, norms, MLP, rotary embedding, head), not through the model's own `forward`: the cache layout,
the attention over block tables and the shapes (for CUDA graphs) are ours, and nothing depends on the
library's cache classes, which change between the GPU machine's 5.17 and the CPU's 5.23.

All tokens of a step go through the projections and MLPs as one [tokens, hidden] matrix. Attention:
- one-token chunks (decodes) together: each row's keys/values gathered from its block table, padded to the
  longest context and masked, one `scaled_dot_product_attention` call per layer;
- a chunk starting at 0 (a fresh prefill) attends causally to its own keys;
- any other chunk (a continued prefill, or a prompt after a reused prefix) gathers its cached context.
The head runs only on the rows whose next token is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from wingpt.engine.scheduler import Chunk


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
    decode_keys: torch.Tensor | None  # [decode_rows, K] slots of each decode row's context (padded)
    decode_mask: torch.Tensor | None  # [decode_rows, 1, 1, K] which of those are real
    prefills: list[tuple[int, int, int, torch.Tensor | None]]  # (offset in T, length, start, context slots)
    logit_rows: torch.Tensor  # [N] rows of T whose logits are wanted


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
        slots = num_blocks * block_size
        self.scratch_slot = slots  # one slot past the blocks, where padding rows of a CUDA graph write
        shape = (config.num_hidden_layers, slots + 1, self.kv_heads, self.head_dim)
        self.k_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------------------------ inputs
    def _context_slots(self, tables: list[list[int]], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots [rows, longest] of each row's first `length` positions, and which of them are real."""
        bs, width = self.block_size, max(lengths)
        blocks = -(-width // bs)
        table = torch.tensor([t[:blocks] + [0] * (blocks - len(t[:blocks])) for t in tables], dtype=torch.long)
        pos = torch.arange(width)
        slots = table[:, pos // bs] * bs + pos % bs
        return slots, pos[None, :] < torch.tensor(lengths)[:, None]

    def prepare(self, chunks: list[Chunk]) -> tuple[StepInputs, list[Chunk]]:
        """The step's tensors, and the chunks in the order their tokens take in it."""
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logit_rows: list[int] = []
        decodes = [c for c in chunks if c.length == 1]
        others = [c for c in chunks if c.length > 1]
        bs = self.block_size
        for chunk in decodes + others:
            seq, start, table = chunk.seq, chunk.start, chunk.seq.block_table
            tokens += seq.tokens[start:start + chunk.length]
            positions += range(start, start + chunk.length)
            slots += [table[p // bs] * bs + p % bs for p in range(start, start + chunk.length)]
            if chunk.completes:
                logit_rows.append(len(tokens) - 1)
        dev = self.device

        def t(values: list[int] | torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.long).to(dev, non_blocking=True)

        decode_keys = decode_mask = None
        if decodes:
            keys, mask = self._context_slots([c.seq.block_table for c in decodes], [c.start + 1 for c in decodes])
            decode_keys, decode_mask = t(keys), mask.to(dev, non_blocking=True)[:, None, None, :]
        prefills = []
        offset = len(decodes)
        for c in others:
            context = None
            if c.start:
                context = t(self._context_slots([c.seq.block_table], [c.start + c.length])[0][0])
            prefills.append((offset, c.length, c.start, context))
            offset += c.length
        return StepInputs(t(tokens), t(positions), t(slots), len(decodes), decode_keys, decode_mask, prefills,
                          t(logit_rows)), decodes + others

    # ------------------------------------------------------------------------------------ forward
    @torch.inference_mode()
    def forward(self, step: StepInputs) -> torch.Tensor:
        """Logits [len(step.logit_rows), vocab] in float32."""
        x = self.decoder.embed_tokens(step.tokens)  # [T, hidden]
        cos, sin = self.decoder.rotary_emb(x[None], step.positions[None])
        for index, layer in enumerate(self.decoder.layers):
            x = x + self._attention(layer, index, layer.input_layernorm(x), cos, sin, step)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        x = self.decoder.norm(x.index_select(0, step.logit_rows))
        return self.model.lm_head(x).float()

    def _attention(self, layer: torch.nn.Module, index: int, h: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, step: StepInputs) -> torch.Tensor:
        attn = layer.self_attn
        tokens = h.shape[0]
        q = attn.q_proj(h).view(1, tokens, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(1, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(1, tokens, self.kv_heads, self.head_dim)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.transpose(1, 2)[0]  # [T, kv_heads, D]
        v = v[0]
        k_cache, v_cache = self.k_cache[index], self.v_cache[index]
        k_cache.index_copy_(0, step.slots, k)
        v_cache.index_copy_(0, step.slots, v)
        q = q[0]  # [heads, T, D]
        out = torch.empty_like(q)
        gqa = self.heads != self.kv_heads
        d = step.decode_rows
        if d:
            keys = k_cache[step.decode_keys].permute(0, 2, 1, 3)  # [d, kv_heads, K, D]
            values = v_cache[step.decode_keys].permute(0, 2, 1, 3)
            rows = F.scaled_dot_product_attention(q[:, :d].transpose(0, 1)[:, :, None], keys, values,
                                                  attn_mask=step.decode_mask, scale=self.scale, enable_gqa=gqa)
            out[:, :d] = rows[:, :, 0].transpose(0, 1)
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
