"""Qwen v1 shapes (WiNGPT2-7B/14B) and the checks a checkpoint must pass before any GPU work.

Shapes come from the Qwen v1 `config.json` conventions: `intermediate_size` is twice the width of
one MLP branch (TensorRT-LLM's QWenDecoderLayer halves it), `kv_channels` is the head size, and
there is no grouped-query attention (KV heads == attention heads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from build_engine.errors import ConfigError

QWEN_V1_ARCHITECTURE = "QWenLMHeadModel"


@dataclass(frozen=True)
class ModelSpec:
    """What sizing needs to know about one Qwen v1 model."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int  # width of one SwiGLU branch (w1, w2); c_proj maps it back to hidden
    vocab: int
    trained_context: int  # default max_seq_len: longer is not promised (no dynamic NTK/logn in TRT-LLM)
    max_position_embeddings: int  # hard limit for max_seq_len
    default_tp: int = 1  # GPUs per engine unless told otherwise

    @property
    def qkv_width(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim

    @property
    def linear_params_per_layer(self) -> int:
        """Weights of the matmuls that quantization touches: c_attn, attn.c_proj, w1, w2, mlp.c_proj."""
        return self.hidden * self.qkv_width + self.heads * self.head_dim * self.hidden + 3 * self.hidden * self.ffn

    @property
    def linear_params(self) -> int:
        return self.layers * self.linear_params_per_layer

    @property
    def embedding_params(self) -> int:
        """One table; Qwen v1 does not tie the LM head to it, so the LM head has as many again."""
        return self.vocab * self.hidden

    @property
    def small_params(self) -> int:
        """The c_attn bias and the RMSNorm weights (kept in 16 bits by every quantization)."""
        return self.layers * (self.qkv_width + 2 * self.hidden) + self.hidden

    @property
    def total_params(self) -> int:
        return self.linear_params + 2 * self.embedding_params + self.small_params


# Qwen-7B v1 (WiNGPT2-7B): trained at 4096 tokens per the WiNGPT2 model card.
QWEN_7B = ModelSpec("7b", layers=32, hidden=4096, heads=32, kv_heads=32, head_dim=128, ffn=11008,
                    vocab=151936, trained_context=4096, max_position_embeddings=8192)
# Qwen-14B v1 (WiNGPT2-14B): its config declares seq_length 2048; WiNGPT2 publishes no 14B length.
# Two GPUs by default: half the weights and KV cache per GPU, and twice the bandwidth per token.
QWEN_14B = ModelSpec("14b", layers=40, hidden=5120, heads=40, kv_heads=40, head_dim=128, ffn=13696,
                     vocab=152064, trained_context=2048, max_position_embeddings=8192, default_tp=2)
SPECS = {spec.name: spec for spec in (QWEN_7B, QWEN_14B)}


def spec_by_name(name: str) -> ModelSpec:
    try:
        return SPECS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; expected one of {', '.join(SPECS)}") from None


@dataclass(frozen=True)
class Checkpoint:
    """A validated Hugging Face checkpoint directory."""

    path: Path
    spec: ModelSpec
    autoawq_group_size: int  # > 0 when the checkpoint is already AWQ-quantized (WiNGPT2-*-AWQ)


def read_checkpoint(model_dir: str | Path) -> Checkpoint:
    """Read `config.json` and refuse anything that is not a Qwen v1 (WiNGPT2) checkpoint."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ConfigError(f"checkpoint directory {path} does not exist; set MODEL_DIR to a downloaded "
                          "WiNGPT2 checkpoint (e.g. /models/WiNGPT2-7B-Chat)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{path} has no config.json; it is not a Hugging Face checkpoint")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config_file} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    architectures = config.get("architectures") or []
    if QWEN_V1_ARCHITECTURE not in architectures or config.get("model_type") != "qwen":
        found = ", ".join(architectures) or "no architectures"
        raise ConfigError(
            f"{path} is a {found} (model_type {config.get('model_type')!r}) checkpoint; build_engine compiles "
            f"Qwen v1 checkpoints ({QWEN_V1_ARCHITECTURE}, model_type 'qwen') such as WiNGPT2-7B/14B-Chat"
        )
    return Checkpoint(path, _spec_from_config(config), _autoawq_group_size(config))


def _spec_from_config(config: dict) -> ModelSpec:
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        shape = dict(layers=int(config["num_hidden_layers"]), hidden=hidden, heads=heads,
                     kv_heads=heads, head_dim=int(config.get("kv_channels", hidden // heads)),
                     ffn=int(config["intermediate_size"]) // 2, vocab=int(config["vocab_size"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"config.json lacks a usable Qwen v1 shape field ({exc})") from None
    known = next((s for s in SPECS.values() if all(getattr(s, k) == v for k, v in shape.items())), None)
    # A known WiNGPT2 size keeps its published training length (Qwen's own seq_length assumes the
    # dynamic NTK / logn attention that TensorRT-LLM does not implement for Qwen v1).
    trained = known.trained_context if known else int(config.get("seq_length") or 2048)
    name = known.name if known else f"qwen-{shape['layers']}l-{hidden}h"
    max_pos = int(config.get("max_position_embeddings") or (known.max_position_embeddings if known else trained))
    return ModelSpec(name, trained_context=min(trained, max_pos), max_position_embeddings=max_pos,
                     default_tp=known.default_tp if known else 1, **shape)


def _autoawq_group_size(config: dict) -> int:
    quant = config.get("quantization_config") or {}
    if not quant:
        return 0
    if quant.get("quant_method") != "awq":
        raise ConfigError(f"the checkpoint is quantized with {quant.get('quant_method')!r}; only bf16 checkpoints "
                          "and AutoAWQ ('awq') checkpoints are supported")
    return int(quant.get("group_size", 128))
