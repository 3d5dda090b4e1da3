"""The embedded default: a small WiNGPT2-shaped checkpoint generated locally on first use.

It has Qwen v1's architecture and checkpoint layout (so it goes through the same loading path as
real WiNGPT2 weights), WiNGPT2's 151,936-row vocabulary and the real Qwen tokenizer, but random
weights from a fixed seed: its answers are meaningless. It exists so the whole serving path runs
on a machine with no GPU and no hub access.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from wingpt.engine.checkpoint import qwen_v1_config
from wingpt.tokenizer import PADDED_VOCAB_SIZE, TIKTOKEN_FILE, find_tiktoken_file, load_tokenizer

EMBEDDED_NAME = "wingpt2-embedded-tiny-v2"
MARKER_FILE = "EMBEDDED_DEFAULT.txt"
WARNING = (
    "Embedded smoke-test model: WiNGPT2's architecture, vocabulary and tokenizer with RANDOM weights. "
    "Its answers are meaningless. Serve real weights with MODEL_DIR=/path/to/WiNGPT2-7B-Chat."
)
SEED = 20231028
SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_half": 176}


def _v1_config() -> dict:
    config = qwen_v1_config(SHAPE["hidden_size"], SHAPE["num_hidden_layers"], SHAPE["num_attention_heads"],
                            SHAPE["ffn_half"], PADDED_VOCAB_SIZE, seq_length=4096)
    return config | {"torch_dtype": "float32", "wingpt_embedded_default": True}


def _random_v1_weights() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    h, half, vocab = SHAPE["hidden_size"], SHAPE["ffn_half"], PADDED_VOCAB_SIZE

    def rnd(*shape: int, std: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    state = {"transformer.wte.weight": rnd(vocab, h, std=1.0), "transformer.ln_f.weight": torch.ones(h)}
    for i in range(SHAPE["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        state.update({
            p + "ln_1.weight": torch.ones(h),
            p + "attn.c_attn.weight": rnd(3 * h, h, std=0.2),
            p + "attn.c_attn.bias": rnd(3 * h),
            p + "attn.c_proj.weight": rnd(h, h, std=0.2),
            p + "ln_2.weight": torch.ones(h),
            p + "mlp.w1.weight": rnd(half, h, std=0.2),
            p + "mlp.w2.weight": rnd(half, h, std=0.2),
            p + "mlp.c_proj.weight": rnd(h, half, std=0.2),
        })
    # Longer output rows win the argmax more often: favouring Chinese tokens (and the byte fragments
    # Chinese characters are split into) makes the gibberish look like the real thing to a detokenizer.
    state["lm_head.weight"] = rnd(vocab, h, std=0.5) * _chinese_row_scale(vocab).unsqueeze(1)
    return state


def _chinese_row_scale(vocab: int) -> torch.Tensor:
    tok = load_tokenizer(None)
    scale = torch.ones(vocab)
    for token_id in range(tok.eod_id):
        raw = tok.token_bytes(token_id)
        try:
            chinese = any("\u4e00" <= ch <= "\u9fff" for ch in raw.decode("utf-8"))
        except UnicodeDecodeError:
            chinese = raw[:1] >= b"\xe4"  # a fragment of a multi-byte character
        if chinese:
            scale[token_id] = 3.0
    return scale


def _write(target: Path) -> None:
    tok = load_tokenizer(None)
    target.mkdir(parents=True)
    (target / "config.json").write_text(json.dumps(_v1_config(), indent=2), encoding="utf-8")
    generation = {"eos_token_id": tok.eod_id, "pad_token_id": tok.eod_id, "do_sample": False,
                  "repetition_penalty": 1.1, "max_new_tokens": 512}
    (target / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
    save_file(_random_v1_weights(), str(target / "model.safetensors"))
    shutil.copyfile(find_tiktoken_file(None), target / TIKTOKEN_FILE)
    (target / MARKER_FILE).write_text(WARNING + "\n", encoding="utf-8")


def ensure_embedded_model(cache_dir: str | Path) -> Path:
    """Path of the embedded checkpoint, generating it (atomically) the first time."""
    target = Path(cache_dir) / EMBEDDED_NAME
    if (target / MARKER_FILE).is_file():
        return target
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".embedded-", dir=cache_dir))
    try:
        _write(staging / "model")
        try:
            os.rename(staging / "model", target)
        except OSError:  # another process finished first
            if not (target / MARKER_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def is_embedded(model_dir: str | Path) -> bool:
    return (Path(model_dir) / MARKER_FILE).is_file()
