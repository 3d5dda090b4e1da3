"""One step of the model over the paged KV cache: a flat batch of chunks from many sequences.

The forward is written here against the weights of transformers' Qwen2 modules (embeddings, per-layer
projections, norms, MLP, rotary embedding, head), not through the model's own `forward`: the cache layout,
the attention over block tables and the shapes (for CUDA graphs) are ours, and nothing depends on the
library's cache classes, which change between the GPU machine's 5.17 and the CPU's 5.23.

All tokens of a step go through the projections and MLPs as one [tokens, hidden] matrix. Attention:
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
    decode_tables: torch.Tensor | None  # [decode_rows, W] each decode row's block ids (padded)
    decode_lengths: torch.Tensor | None  # [decode_rows] each decode row's context length, its new token included
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
        # One block past the pool: padding rows of a CUDA graph write and attend there.
        self.scratch_block = num_blocks
        self.scratch_slot = num_blocks * block_size
        shape = (config.num_hidden_layers, (num_blocks + 1) * block_size, self.kv_heads, self.head_dim)
        self.k_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------------------------ inputs
    def _tables(self, tables: list[list[int]], lengths: list[int]) -> torch.Tensor:
        """Block ids [rows, blocks of the longest] covering each row's first `length` positions (padded with 0)."""
        blocks = -(-max(lengths) // self.block_size)
        return torch.tensor([t[:blocks] + [0] * (blocks - len(t[:blocks])) for t in tables], dtype=torch.long)

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

        decode_tables = decode_lengths = None
        if decodes:
            lengths = [c.start + 1 for c in decodes]
            decode_tables = t(self._tables([c.seq.block_table for c in decodes], lengths))
            decode_lengths = t(lengths)
        prefills = []
        offset = len(decodes)
        for c in others:
            context = None
            if c.start:
                length = c.start + c.length
                table = self._tables([c.seq.block_table], [length])
                context = t(context_slots(table, torch.tensor([length]), bs)[0][0, :length])
            prefills.append((offset, c.length, c.start, context))
            offset += c.length
        return StepInputs(t(tokens), t(positions), t(slots), len(decodes), decode_tables, decode_lengths, prefills,
                          t(logit_rows)), decodes + others

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
            if index + 1 < len(layers):
                x, h = add_rms_norm(x, layer.mlp(h), *_norm(layers[index + 1].input_layernorm))
            else:
                x = x + layer.mlp(h)
        _, x = add_rms_norm(x.index_select(0, step.logit_rows), None, *_norm(self.decoder.norm))
        return self.model.lm_head(x).float()

    def _attention(self, layer: torch.nn.Module, index: int, h: torch.Tensor, cos: torch.Tensor,
                   sin: torch.Tensor, step: StepInputs) -> torch.Tensor:
        attn = layer.self_attn
        tokens = h.shape[0]
        q = attn.q_proj(h).view(tokens, self.heads, self.head_dim)
        k = attn.k_proj(h).view(tokens, self.kv_heads, self.head_dim)
        v = attn.v_proj(h).view(tokens, self.kv_heads, self.head_dim)
        k_cache, v_cache = self.k_cache[index], self.v_cache[index]
        # Rotary on q and k, and k and v into the cache at the step's slots (kernels/rotary.py).
        q, k = rotate_and_store(q, k, v, cos, sin, k_cache, v_cache, step.slots)  # [T, heads | kv_heads, D]
        q = q.transpose(0, 1)  # [heads, T, D]
        out = torch.empty_like(q)
        gqa = self.heads != self.kv_heads
        d = step.decode_rows
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
