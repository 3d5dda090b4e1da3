"""The command lines of a build, as data: checkpoint conversion or quantization, trtllm-build, render.

Every flag here is checked by the tests against the pinned release's parsers (`pins.py`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from build_engine import pins
from build_engine.settings import Build
from build_engine.sizing import FP8_QUANTS, TOKENS_PER_BLOCK

SEED = 1234


@dataclass(frozen=True)
class Step:
    title: str
    why: str
    argv: tuple[str, ...]


def checkpoint_step(b: Build, calib_samples: int) -> Step:
    """HF checkpoint -> TensorRT-LLM checkpoint: ModelOpt quantization when anything is quantized."""
    s = b.settings
    examples = Path(s.trtllm_examples)
    common = ("--model_dir", str(b.checkpoint.path), "--output_dir", str(b.checkpoint_dir),
              "--tp_size", str(b.tp), "--pp_size", "1")
    if b.quant == "autoawq":
        return Step("convert the AutoAWQ checkpoint",
                    "the published 4-bit weights are used as they are (no calibration); fp16 like AutoAWQ",
                    (s.python, str(examples / pins.QWEN_CONVERT_SCRIPT), *common, "--dtype", "float16"))
    if not b.needs_calibration:
        return Step("convert the bf16 checkpoint", "no quantization: the weights are copied and split per GPU",
                    (s.python, str(examples / pins.QWEN_CONVERT_SCRIPT), *common, "--dtype", "bfloat16",
                     "--workers", str(b.tp)))
    qformat = "full_prec" if b.quant == "bf16" else b.quant
    argv = [s.python, str(examples / pins.QUANTIZE_SCRIPT), *common, "--dtype", "bfloat16", "--qformat", qformat]
    if b.awq_block_size:
        argv += ["--awq_block_size", str(b.awq_block_size)]
    if s.kv_cache != "auto":
        argv += ["--kv_cache_dtype", s.kv_cache]
    argv += ["--calib_dataset", str(b.calib_dir), "--calib_size", str(calib_samples),
             "--calib_max_seq_length", str(s.calib_max_seq_len), "--batch_size", str(s.calib_batch_size),
             "--seed", str(SEED)]
    return Step(f"quantize ({qformat}" + (f", group {b.awq_block_size}" if b.awq_block_size else "")
                + (f", {s.kv_cache} KV cache" if s.kv_cache != "auto" else "") + ") with ModelOpt",
                "calibrated on Chinese medical chat in the WiNGPT2 template, not the default English news",
                tuple(argv))


def build_step(b: Build) -> Step:
    s = b.settings
    argv = [
        "trtllm-build", "--checkpoint_dir", str(b.checkpoint_dir), "--output_dir", str(b.engine_dir),
        "--max_batch_size", str(s.max_batch_size), "--max_input_len", str(b.max_input_len),
        "--max_seq_len", str(b.max_seq_len), "--max_num_tokens", str(b.max_num_tokens),
        "--kv_cache_type", "paged", "--tokens_per_block", str(TOKENS_PER_BLOCK),
        "--gpt_attention_plugin", "auto", "--remove_input_padding", "enable", "--context_fmha", "enable",
        # Said explicitly either way: the builder would switch it off with only a warning (sizing.kv_reuse_loss).
        "--use_paged_context_fmha", "enable" if b.kv_reuse else "disable",
    ]
    if b.quant in FP8_QUANTS:
        # FP8 context attention reads the KV cache in FP8, so it is on only with an FP8 KV cache.
        argv += ["--use_fp8_context_fmha", "enable" if s.kv_cache == "fp8" else "disable"]
    else:
        # cuBLASLt for the 16-bit matmuls (LM head; all of them for bf16). FP8 GEMMs stay TensorRT's own.
        argv += ["--gemm_plugin", "auto"]
    argv += ["--workers", str(b.tp)]
    return Step("build the TensorRT engine",
                "in-flight batching needs the GPT attention plugin, paged KV cache and packed (unpadded) input; "
                "paged context FMHA enables KV-cache reuse of the shared preamble and chunked prefill",
                tuple(argv))


def render_step(b: Build) -> Step:
    s = b.settings
    values = {
        "engine_dir": b.engine_dir.resolve(),
        "tokenizer_dir": b.checkpoint.path.resolve(),
        "max_batch_size": s.max_batch_size,
        "context_window": b.max_seq_len,
        "max_tokens_limit": b.max_seq_len // 2,
        "kv_cache_free_gpu_mem_fraction": s.kv_cache_free_gpu_mem_fraction,
        # Off when the engine has no paged context FMHA, so the config says what the engine does.
        "enable_kv_cache_reuse": str(b.kv_reuse).lower(),
        "enable_chunked_context": str(b.kv_reuse).lower(),
        "batch_scheduler_policy": s.batch_scheduler_policy,
    }
    # --model-dir too: without it serving would generate its embedded smoke-test model
    argv = [s.python, "-m", "serving", "render", "--target", "gpu-trtllm", "--out", str(b.repo_dir),
            "--model-dir", str(b.checkpoint.path.resolve())]
    for key, value in values.items():
        argv += ["--set", f"{key}={value}"]
    return Step("render the Triton model repository for this engine",
                "the tensorrt_llm model points at the engine, the orchestrator at the checkpoint's tokenizer",
                tuple(argv))


def steps(b: Build, calib_samples: int) -> list[Step]:
    return [checkpoint_step(b, calib_samples), build_step(b), render_step(b)]


def format_command(argv: tuple[str, ...]) -> str:
    """One flag and its value per line, shell-quoted, so a dry run reads like a script."""
    lines: list[str] = []
    for token in argv:
        quoted = shlex.quote(token)
        if token.startswith("--") or not lines:
            lines.append(quoted)
        else:
            lines[-1] += " " + quoted
    return " \\\n    ".join(lines)
