"""Memory arithmetic for a WiNGPT2 engine: weights, KV cache, and how many sequences fit.

The model is deliberately simple enough to check by hand (the unit tests do):
  weights/GPU = (quantized linear weights + LM head) / tp + embedding + norms and biases
    int4 (AWQ, W4A8): 4 bits per weight + one fp16 scale per group; fp8: 1 byte; bf16: 2 bytes;
    the embedding, LM head, biases and norms stay bf16 (ModelOpt leaves `*lm_head*` unquantized).
  KV bytes/token/GPU = 2 (K and V) x layers x kv_heads x head_dim x bytes / tp
  KV pool = kv_cache_free_gpu_mem_fraction x (memory - weights - activations - runtime reserve),
    which is how the executor sizes its pool from the memory left after loading the engine.
  sequences = pool // (ceil(context / tokens_per_block) x block bytes): the paged cache hands out
    whole blocks.
Activations and the runtime reserve are estimates; the engine build logs the real figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from build_engine.errors import ConfigError
from build_engine.gpus import Gpu
from build_engine.models import ModelSpec
from build_engine.pins import AWQ_BLOCK_SIZES

QUANTS = ("int4_awq", "fp8", "w4a8_awq", "bf16")
KV_CACHES = ("auto", "fp8", "int8")
FP8_QUANTS = ("fp8", "w4a8_awq")  # need FP8 tensor cores (Ada/Hopper)
WEIGHT_BITS = {"int4_awq": 4, "w4a8_awq": 4, "fp8": 8, "bf16": 16}
KV_BYTES = {"auto": 2, "fp8": 1, "int8": 1}  # "auto" = the model dtype, bf16
TOKENS_PER_BLOCK = 32  # passed to trtllm-build explicitly, so the planner and the engine agree
RUNTIME_RESERVE_BYTES = 2 * 1024**3  # CUDA context, cuBLAS/NCCL workspaces, decoder buffers (estimate)
DEFAULT_KV_FRACTION = 0.9


def check_tp(spec: ModelSpec, tp: int) -> None:
    """Tensor parallelism splits attention heads, so it must divide them."""
    if tp < 1 or spec.heads % tp or spec.kv_heads % tp:
        raise ConfigError(f"tp={tp} does not divide the {spec.heads} attention heads of {spec.name}; "
                          f"use one of {', '.join(str(t) for t in range(1, spec.heads + 1) if spec.heads % t == 0)}")


def awq_block_size(spec: ModelSpec, tp: int, requested: int = 0) -> int:
    """The AWQ group size: 128 unless a tensor-parallel shard of a row-parallel layer is not whole groups.

    ModelOpt splits row-parallel weights (attn.c_proj, mlp.c_proj) by input channel and their group
    scales by group, so each shard's input width must be a multiple of the group: Qwen-14B's MLP is
    13696 wide, 6848 per GPU at tp=2, which is 53.5 groups of 128 but 107 groups of 64. This is the
    "Y*" (not every AWQ + TP combination) of TensorRT-LLM's Qwen support matrix.
    """
    widths = (spec.hidden // tp, spec.ffn // tp)
    candidates = (requested,) if requested else AWQ_BLOCK_SIZES
    for block in candidates:
        if block not in AWQ_BLOCK_SIZES:
            raise ConfigError(f"AWQ block size must be one of {AWQ_BLOCK_SIZES}, got {block}")
        if all(w % block == 0 for w in widths):
            return block
    raise ConfigError(
        f"AWQ group size {'/'.join(map(str, candidates))} does not divide the per-GPU widths {widths} of "
        f"{spec.name} at tp={tp}; " + ("use --awq-block-size 64 or " if requested == 128 else "")
        + "choose another tp or quantization (fp8, bf16)"
    )


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of each weight group for the whole model (not yet split across GPUs)."""

    linear: int
    lm_head: int
    embedding: int
    small: int

    def per_gpu(self, tp: int) -> int:
        """Linear layers and the LM head are split across GPUs; the embedding and norms are replicated."""
        return (self.linear + self.lm_head) // tp + self.embedding + self.small

    def read_per_token(self, tp: int) -> int:
        """Bytes each GPU streams per decode step: every matmul weight, but only one embedding row."""
        return (self.linear + self.lm_head) // tp


def weight_bytes(spec: ModelSpec, quant: str, block: int = 128) -> WeightBytes:
    if quant not in QUANTS:
        raise ConfigError(f"quantization must be one of {', '.join(QUANTS)}, got {quant!r}")
    linear = spec.linear_params * WEIGHT_BITS[quant] // 8
    if quant in ("int4_awq", "w4a8_awq"):
        linear += spec.linear_params // block * 2  # fp16 scale per group
    return WeightBytes(linear=linear, lm_head=spec.embedding_params * 2, embedding=spec.embedding_params * 2,
                       small=spec.small_params * 2)


def kv_bytes_per_token(spec: ModelSpec, kv_cache: str, tp: int) -> int:
    if kv_cache not in KV_CACHES:
        raise ConfigError(f"KV cache dtype must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}")
    return 2 * spec.layers * spec.kv_heads * spec.head_dim * KV_BYTES[kv_cache] // tp


def default_max_num_tokens(max_seq_len: int, max_batch_size: int) -> int:
    """One full-length prefill plus one decode token for every other sequence per step.

    This is the rule the pinned release's Qwen README uses (max_input_len + max_batch_size - 1): it
    caps how much prefill one iteration does, so a long new prompt cannot stall the streams already
    generating by more than one chunk; paged context FMHA chunks anything longer.
    """
    return (max_seq_len - 1) + max_batch_size - 1


def activation_bytes(spec: ModelSpec, max_num_tokens: int, max_batch_size: int, tp: int) -> int:
    """Estimate: two live bf16 buffers of the widest per-token tensors, plus fp32 logits for each sequence."""
    per_token = (3 * spec.hidden + 2 * spec.ffn) // tp
    return max_num_tokens * per_token * 2 * 2 + max_batch_size * spec.vocab * 4


@dataclass(frozen=True)
class Capacity:
    """How one quantization choice fills one GPU of a tp-way engine."""

    quant: str
    kv_cache: str
    weights_per_gpu: int
    activations: int
    kv_pool: int
    kv_per_token: int
    sequences: int  # concurrent sequences of `context` tokens that fit
    decode_tok_s_ceiling: float  # one stream, memory-bandwidth bound


def capacity(spec: ModelSpec, gpu: Gpu, quant: str, kv_cache: str, tp: int, context: int,
             max_batch_size: int, kv_fraction: float = DEFAULT_KV_FRACTION) -> Capacity:
    check_tp(spec, tp)
    block = awq_block_size(spec, tp) if quant in ("int4_awq", "w4a8_awq") else 128
    weights = weight_bytes(spec, quant, block)
    acts = activation_bytes(spec, default_max_num_tokens(context, max_batch_size), max_batch_size, tp)
    free = gpu.memory_bytes - weights.per_gpu(tp) - acts - RUNTIME_RESERVE_BYTES
    pool = max(0, math.floor(kv_fraction * free))
    per_token = kv_bytes_per_token(spec, kv_cache, tp)
    per_sequence = math.ceil(context / TOKENS_PER_BLOCK) * TOKENS_PER_BLOCK * per_token
    return Capacity(quant=quant, kv_cache=kv_cache, weights_per_gpu=weights.per_gpu(tp), activations=acts,
                    kv_pool=pool, kv_per_token=per_token, sequences=pool // per_sequence,
                    decode_tok_s_ceiling=gpu.bandwidth_tb_s * 1e12 / weights.read_per_token(tp))


def suggested_max_batch_size(sequences: int) -> int:
    """What fits, in multiples of 8 and at most 256: more slots than KV cache only queue inside the engine."""
    return sequences if sequences < 8 else min(256, sequences // 8 * 8)


def check_context(spec: ModelSpec, context: int) -> str:
    """Refuse a sequence length past the model's positions; return a warning past its training length."""
    if context < 2:
        raise ConfigError(f"the sequence length must be at least 2 tokens, got {context}")
    if context > spec.max_position_embeddings:
        raise ConfigError(f"a sequence length of {context} is over the {spec.max_position_embeddings}-token limit "
                          f"(max_position_embeddings) of {spec.name}")
    if context > spec.trained_context:
        return (f"warning: {context} tokens is past the {spec.trained_context} tokens {spec.name} was trained at; "
                "TensorRT-LLM implements no dynamic NTK / logn attention for Qwen v1, so quality is not promised")
    return ""


def kv_reuse_loss(quant: str, kv_cache: str) -> str:
    """Why TensorRT-LLM 1.0 would build this combination without paged context FMHA, or "" if it keeps it.

    tensorrt_llm/builder.py (build()) switches use_paged_context_fmha off, with only a warning, for an
    INT8 KV cache with any weights, and for an FP8 KV cache unless the weights are FP8 or W4A8-AWQ (FP8
    context FMHA is only used with the FP8 workflows). Without it the executor then disables chunked
    context (executor.cpp fixExecutorConfig) and KV-cache block reuse cannot run, although the rendered
    config asks for both: the shared system-prompt preamble is recomputed for every chat.
    """
    if kv_cache == "int8":
        return ("an INT8 KV cache turns off paged context FMHA in TensorRT-LLM 1.0 "
                "('doesn't work with int8 kv cache currently')")
    if kv_cache == "fp8" and quant not in FP8_QUANTS:
        return (f"an FP8 KV cache with {quant} weights turns off paged context FMHA in TensorRT-LLM 1.0 "
                "(FP8 context FMHA exists only for fp8 / w4a8_awq weights)")
    return ""


KV_REUSE_LOSS_EFFECT = "so KV-cache reuse of the shared preamble and chunked prefill are lost"
