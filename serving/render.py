"""The templating step: `model_repository/` templates -> a repository Triton loads.

Like tensorrtllm_backend's fill_template.py, `${name}` placeholders in `config.pbtxt.tmpl` are
filled from parameters; unlike it, a placeholder left unfilled is an error, not a literal.
A target picks the engine model: `torch_llm` for cpu / gpu-torch, `tensorrt_llm` for gpu-trtllm.
"""

from __future__ import annotations

import shutil
import string
from pathlib import Path

from wingpt.safety.disclaimer import DISCLAIMER
from wingpt.settings import ServerSettings

TEMPLATES = Path(__file__).resolve().parent.parent / "model_repository"
COMMON_MODELS = ("ensemble",)  # the BLS orchestrator; the engine model is added per target
ENGINE_MODEL = {"cpu": "torch_llm", "gpu-torch": "torch_llm", "gpu-trtllm": "tensorrt_llm"}
# engine_dir has no default: a gpu-trtllm repository without an engine would fail only when Triton loads it.
TRTLLM_REQUIRED = ("engine_dir",)
TRTLLM_DEFAULTS = {
    "batch_scheduler_policy": "guaranteed_no_evict",
    "kv_cache_free_gpu_mem_fraction": "0.9",
    "enable_kv_cache_reuse": "true",
    "enable_chunked_context": "true",
}


class RenderError(ValueError):
    """A template parameter is missing or unknown."""


def _pbtxt_string(value: str) -> str:
    """Escape a value for use inside a double-quoted protobuf text string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parameters_for(settings: ServerSettings, model_dir: str, embedded: bool) -> dict[str, str]:
    """Template parameters from the typed settings (CLI/env flow one way into rendered configs)."""
    note = (
        "embedded smoke-test model with random weights: answers are meaningless; "
        "serve real weights with MODEL_DIR=/path/to/WiNGPT2-7B-Chat"
        if embedded
        else f"WiNGPT2 checkpoint {Path(model_dir).name}"
    )
    return {
        "engine_model": ENGINE_MODEL[settings.target],
        "max_batch_size": str(settings.max_batch_size),
        "max_queue_size": str(settings.max_queue_size),
        "priority_levels": ",".join(settings.priority),
        "priority_reserved": str(settings.priority_reserved),
        "context_window": str(settings.context_window),
        "max_tokens_default": str(settings.max_tokens_default),
        "max_tokens_limit": str(settings.max_tokens_limit),
        "system_prompt": _pbtxt_string(settings.system_prompt),
        "tokenizer_dir": model_dir,
        "safety_rules": _pbtxt_string(settings.safety_rules),
        "disclaimer": _pbtxt_string(DISCLAIMER),
        "cancel_check_period_ms": str(settings.cancel_check_period_ms),
        "model_dir": model_dir,
        "device": settings.device,
        "dtype": settings.resolved_dtype,
        "cuda_graph": str(settings.cuda_graph),
        "test_faults": settings.test_faults,
        "kv_cache_free_gpu_mem_fraction": str(settings.kv_cache_free_gpu_mem_fraction),
        "kv_cache_bytes": str(settings.kv_cache_bytes),
        "kv_block_size": str(settings.kv_block_size),
        "prefix_reuse": str(settings.enable_kv_cache_reuse),
        "max_num_tokens": str(settings.max_num_tokens),
        "instance_kind": "KIND_CPU" if settings.device == "cpu" else "KIND_GPU",
        "embedded_default": "true" if embedded else "false",
        "model_note": note,
        **(TRTLLM_DEFAULTS if settings.target == "gpu-trtllm" else {}),
    }


def render_repository(target: str, out_dir: str | Path, params: dict[str, str]) -> Path:
    """Write the repository for `target` into `out_dir` (replacing it); returns the path."""
    if target == "gpu-trtllm":
        for name in TRTLLM_REQUIRED:
            if not str(params.get(name, "")).strip():
                raise RenderError(f"tensorrt_llm/config.pbtxt needs parameter {name!r}, the TensorRT-LLM engine "
                                  f"directory (build one with `make engine`); pass --set {name}=...")
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    models = (*COMMON_MODELS, ENGINE_MODEL[target])
    for model in models:
        src = TEMPLATES / model
        dst = out / model
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.tmpl"))
        template = string.Template((src / "config.pbtxt.tmpl").read_text(encoding="utf-8"))
        try:
            text = template.substitute(params)
        except KeyError as exc:
            name = exc.args[0]
            raise RenderError(f"{model}/config.pbtxt needs parameter {name!r}; pass --set {name}=...") from None
        (dst / "config.pbtxt").write_text(text, encoding="utf-8")
        (dst / "1").mkdir(exist_ok=True)  # version dir; git keeps no empty ensemble/1
    return out
