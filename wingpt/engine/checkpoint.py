"""Load a WiNGPT2 checkpoint as a transformers `Qwen2ForCausalLM`, without remote code.

WiNGPT2 is Qwen-7B v1 (`QWenLMHeadModel`, trust_remote_code written for transformers 4.3x).
Its layers are exactly Qwen2's without grouped-query attention: a fused QKV projection with
bias, an un-biased output projection, RMSNorm and a SwiGLU MLP. Renaming the tensors lets the
maintained Qwen2 implementation run it. Qwen v1's dynamic-NTK and log-n attention only act past
the trained `seq_length`, which our context window never exceeds, so outputs are unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from wingpt.tokenizer import TIKTOKEN_FILE, find_tiktoken_file

QWEN_V1_MODEL_TYPE = "qwen"
# A checkpoint directory with this file holds WiNGPT2's shape (config.json, tokenizer) but no weights:
# they are initialised randomly on the device. For GPU benchmarks where the real weights cannot be had:
# the cost of a token depends on the shape, not on the values.
RANDOM_WEIGHTS_FILE = "RANDOM_WEIGHTS"


def qwen_v1_config(hidden: int, layers: int, heads: int, ffn_half: int, vocab: int, seq_length: int) -> dict:
    """A Qwen v1 (`QWenLMHeadModel`) config.json as WiNGPT2 ships it, for a given shape."""
    return {
        "architectures": ["QWenLMHeadModel"],
        "model_type": QWEN_V1_MODEL_TYPE,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "kv_channels": hidden // heads,
        "intermediate_size": 2 * ffn_half,
        "layer_norm_epsilon": 1e-6,
        "rotary_emb_base": 10000,
        "rotary_pct": 1.0,
        "seq_length": seq_length,
        "max_position_embeddings": seq_length,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
        "no_bias": True,
        "use_dynamic_ntk": True,
        "use_logn_attn": True,
    }


def read_config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text(encoding="utf-8"))


def write_random_weights_checkpoint(target: str | Path, v1_config: dict) -> Path:
    """A checkpoint directory of `v1_config`'s shape, the real tokenizer and no weights (see RANDOM_WEIGHTS_FILE)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps(v1_config, indent=2), encoding="utf-8")
    shutil.copyfile(find_tiktoken_file(None), target / TIKTOKEN_FILE)
    (target / RANDOM_WEIGHTS_FILE).write_text("weights are random, initialised on the device at load\n",
                                              encoding="utf-8")
    return target


def qwen2_config_from_v1(v1: dict, dtype: torch.dtype) -> Qwen2Config:
    """Map Qwen v1's config fields onto Qwen2's. v1's `intermediate_size` counts both MLP halves."""
    heads = v1["num_attention_heads"]
    return Qwen2Config(
        vocab_size=v1["vocab_size"],
        hidden_size=v1["hidden_size"],
        intermediate_size=v1["intermediate_size"] // 2,
        num_hidden_layers=v1["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=v1.get("kv_channels", v1["hidden_size"] // heads),
        max_position_embeddings=v1.get("seq_length", v1.get("max_position_embeddings", 2048)),
        rms_norm_eps=v1.get("layer_norm_epsilon", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(v1.get("rotary_emb_base", 10000))},
        tie_word_embeddings=v1.get("tie_word_embeddings", False),
        use_sliding_window=False,
        dtype=dtype,
    )


_LAYER = re.compile(r"transformer\.h\.(\d+)\.(.+)")
_RENAMES = {
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "mlp.w1.weight": "mlp.up_proj.weight",  # v1: c_proj(w1(x) * silu(w2(x)))
    "mlp.w2.weight": "mlp.gate_proj.weight",
    "mlp.c_proj.weight": "mlp.down_proj.weight",
}


def qwen2_state_dict_from_v1(v1_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and split the fused QKV of) a Qwen v1 state dict into Qwen2's names."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in v1_state.items():
        if name == "transformer.wte.weight":
            out["model.embed_tokens.weight"] = tensor
        elif name == "transformer.ln_f.weight":
            out["model.norm.weight"] = tensor
        elif name == "lm_head.weight":
            out[name] = tensor
        elif match := _LAYER.fullmatch(name):
            layer, rest = match.groups()
            prefix = f"model.layers.{layer}."
            if rest in ("attn.c_attn.weight", "attn.c_attn.bias"):
                kind = rest.rsplit(".", 1)[1]
                for proj, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                    out[f"{prefix}self_attn.{proj}.{kind}"] = part.contiguous()
            elif rest in _RENAMES:
                out[prefix + _RENAMES[rest]] = tensor
            else:
                raise ValueError(f"unexpected Qwen v1 tensor {name}")
        elif not name.endswith("rotary_emb.inv_freq"):
            raise ValueError(f"unexpected Qwen v1 tensor {name}")
    return out


def read_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """All weight shards of a checkpoint: safetensors preferred, else PyTorch .bin files."""
    shards = sorted(model_dir.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    if shards:
        for shard in shards:
            state.update(load_file(shard))
        return state
    bins = sorted(model_dir.glob("pytorch_model*.bin"))
    if not bins:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {model_dir}")
    for shard in bins:
        state.update(torch.load(shard, map_location="cpu", weights_only=True))
    return state


def load_model(model_dir: str | Path, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """The checkpoint as an eval-mode causal LM on `device`; Qwen v1 is converted, others load natively."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if config.get("model_type") != QWEN_V1_MODEL_TYPE:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
        return model.to(device).eval()
    qwen2_config = qwen2_config_from_v1(config, dtype)
    if (model_dir / RANDOM_WEIGHTS_FILE).is_file():
        return _random_model(qwen2_config, device, dtype)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(qwen2_config)
    state = {k: v.to(dtype) for k, v in qwen2_state_dict_from_v1(read_state_dict(model_dir)).items()}
    model.load_state_dict(state, strict=True, assign=True)
    # RoPE frequencies are a buffer created on the meta device: rebuild it for real, kept in float32.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=qwen2_config)
    return model.to(device).eval()


def _random_model(config: Qwen2Config, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """The model initialised on `device` directly (a 7B model in seconds, no host copy), seeded."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()
