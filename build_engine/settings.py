"""Build settings: CLI flags > environment > defaults -> `BuildSettings` -> a validated `Build`.

`BuildSettings` is what the user asked for (0 / "" mean "choose for me"); `resolve()` reads the
checkpoint, fills in the model-dependent defaults and rejects impossible combinations, so every
error surfaces before a GPU is touched.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from build_engine import pins
from build_engine.errors import ConfigError
from build_engine.models import Checkpoint, read_checkpoint
from build_engine.sizing import (
    DEFAULT_KV_FRACTION,
    KV_CACHES,
    KV_REUSE_LOSS_EFFECT,
    QUANTS,
    awq_block_size,
    check_context,
    check_tp,
    default_max_num_tokens,
    kv_reuse_loss,
)

SHIPPED_CALIBRATION = Path(__file__).parent / "data" / "wingpt2_medical_calib.jsonl"
SCHEDULER_POLICIES = ("guaranteed_no_evict", "max_utilization")
TRUE = ("1", "true", "yes", "on")


def _f(env: str, help_: str, default: object) -> object:
    """A settings field whose environment variable and help live beside it, for the CLI and the docs."""
    return field(default=default, metadata={"env": env, "help": help_})


@dataclass(frozen=True)
class BuildSettings:
    """One engine build. Each field has an environment variable and a `--flag` of the same name."""

    model_dir: str = _f("MODEL_DIR", "Hugging Face checkpoint (WiNGPT2-7B-Chat, -14B-Chat or -AWQ)", "")
    model_name: str = _f("ENGINE_MODEL_NAME", "model part of the engine name (default: checkpoint dir name)", "")
    quant: str = _f("ENGINE_QUANT", f"weights: {' | '.join(QUANTS)}", "int4_awq")
    kv_cache: str = _f("ENGINE_KV_CACHE", "KV cache: auto (bf16) | fp8 | int8", "auto")
    awq_block_size: int = _f("ENGINE_AWQ_BLOCK_SIZE", "AWQ group size 128 | 64 (0: 128 unless tp needs 64)", 0)
    tp: int = _f("ENGINE_TP", "GPUs per engine (0: 1 for 7B, 2 for 14B)", 0)
    max_batch_size: int = _f("ENGINE_MAX_BATCH_SIZE", "sequences the engine schedules at once", 64)
    max_seq_len: int = _f("ENGINE_MAX_SEQ_LEN", "prompt + answer tokens (0: trained length, 4096 for 7B)", 0)
    max_num_tokens: int = _f("ENGINE_MAX_NUM_TOKENS", "tokens per step (0: max_seq_len + max_batch_size - 2)", 0)
    output_root: str = _f("ENGINE_OUTPUT_ROOT", "where engine directories are created", "build/engines")
    repo_out: str = _f("ENGINE_REPO_OUT", "rendered Triton model repository (default: <engine dir>/model_repository)",
                       "")
    calib_jsonl: str = _f("ENGINE_CALIB_JSONL", "calibration prompts, JSONL of {text} or {messages}",
                          str(SHIPPED_CALIBRATION))
    calib_samples: int = _f("ENGINE_CALIB_SAMPLES", "packed calibration samples (AWQ uses at most 32)",
                            pins.AWQ_CALIB_SIZE_CAP)
    calib_max_seq_len: int = _f("ENGINE_CALIB_MAX_SEQ_LEN", "tokens per calibration sample", 512)
    calib_batch_size: int = _f("ENGINE_CALIB_BATCH_SIZE", "calibration batch size", 8)
    kv_cache_free_gpu_mem_fraction: float = _f("ENGINE_KV_FRACTION", "share of free GPU memory for the KV cache",
                                               DEFAULT_KV_FRACTION)
    batch_scheduler_policy: str = _f("ENGINE_SCHEDULER_POLICY", " | ".join(SCHEDULER_POLICIES),
                                     "guaranteed_no_evict")
    trtllm_examples: str = _f("TRTLLM_EXAMPLES", "TensorRT-LLM examples dir of the pinned release",
                              pins.DEFAULT_EXAMPLES_DIR)
    python: str = _f("ENGINE_PYTHON", "interpreter that runs quantize.py and serving", sys.executable or "python3")
    dry_run: bool = _f("DRY_RUN", "print every command and file, run nothing", False)
    force: bool = _f("ENGINE_FORCE", "rebuild into an existing engine directory", False)
    accept_no_kv_reuse: bool = _f("ENGINE_ACCEPT_NO_KV_REUSE",
                                  "build a KV cache dtype that loses KV-cache reuse and chunked prefill", False)

    @classmethod
    def from_sources(cls, cli: dict[str, object], environ: dict[str, str] | None = None) -> BuildSettings:
        """CLI values win over the environment, which wins over the defaults; None means 'not given'."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"], "")
            if raw != "":
                values[f.name] = _convert(f.name, f.type, raw)
            if cli.get(f.name) is not None:
                values[f.name] = cli[f.name]
        return cls(**values)  # type: ignore[arg-type]


def _convert(name: str, type_: object, raw: str) -> object:
    try:
        if type_ == "bool":
            return raw.strip().lower() in TRUE
        if type_ == "int":
            return int(raw)
        if type_ == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    return raw


@dataclass(frozen=True)
class Build:
    """A validated build: every value concrete, every path decided."""

    settings: BuildSettings
    checkpoint: Checkpoint
    model_slug: str
    quant: str  # int4_awq | fp8 | w4a8_awq | bf16 | autoawq (an already AWQ-quantized checkpoint)
    awq_block_size: int  # 0 when the weights are not group-quantized
    tp: int
    max_seq_len: int
    max_input_len: int
    max_num_tokens: int
    warning: str
    kv_reuse: bool = True  # False: the engine is built without paged context FMHA (see sizing.kv_reuse_loss)

    @property
    def name(self) -> str:
        quant = {"int4_awq": f"int4awq-g{self.awq_block_size}", "w4a8_awq": f"w4a8awq-g{self.awq_block_size}",
                 "autoawq": f"autoawq-g{self.awq_block_size}"}.get(self.quant, self.quant)
        kv = self.settings.kv_cache if self.settings.kv_cache != "auto" else self.dtype
        return f"{self.model_slug}_{quant}_kv-{kv}_tp{self.tp}_bs{self.settings.max_batch_size}_seq{self.max_seq_len}"

    @property
    def dtype(self) -> str:
        """Activations and unquantized weights: bf16 as WiNGPT2 was trained, fp16 for AutoAWQ checkpoints."""
        return "fp16" if self.quant == "autoawq" else "bf16"

    @property
    def root(self) -> Path:
        return Path(self.settings.output_root) / self.name

    @property
    def engine_dir(self) -> Path:
        return self.root / "engine"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "tllm_checkpoint"

    @property
    def calib_dir(self) -> Path:
        return self.root / "calib"

    @property
    def repo_dir(self) -> Path:
        return Path(self.settings.repo_out) if self.settings.repo_out else self.root / "model_repository"

    @property
    def needs_calibration(self) -> bool:
        return self.quant in ("int4_awq", "fp8", "w4a8_awq") or self.settings.kv_cache != "auto"


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.")
    if not slug:
        raise ConfigError(f"cannot make an engine name from model name {name!r}")
    return slug


def resolve(s: BuildSettings) -> Build:
    """Validate `s` against the checkpoint and fill in the model-dependent defaults."""
    _check_choices(s)
    if not s.model_dir:
        raise ConfigError("no checkpoint given: set MODEL_DIR (or --model-dir) to a WiNGPT2 checkpoint directory")
    ckpt = read_checkpoint(s.model_dir)
    spec = ckpt.spec
    tp = s.tp or spec.default_tp
    check_tp(spec, tp)
    max_seq_len = s.max_seq_len or spec.trained_context
    warning = check_context(spec, max_seq_len)
    quant, block = _quantization(s, ckpt, tp)
    max_input_len = max_seq_len - 1
    max_num_tokens = s.max_num_tokens or default_max_num_tokens(max_seq_len, s.max_batch_size)
    if max_num_tokens < s.max_batch_size:
        raise ConfigError(f"max_num_tokens ({max_num_tokens}) must be at least max_batch_size ({s.max_batch_size}): "
                          "every scheduled sequence needs one token per step")
    loss = kv_reuse_loss(quant, s.kv_cache)
    if loss and not s.accept_no_kv_reuse:
        raise ConfigError(f"{loss}, {KV_REUSE_LOSS_EFFECT}. Use the default bf16 KV cache (ENGINE_KV_CACHE=auto)"
                          + (", fp8 or w4a8_awq weights for an FP8 KV cache," if s.kv_cache == "fp8" else "")
                          + " or accept the loss with --accept-no-kv-reuse (ENGINE_ACCEPT_NO_KV_REUSE=1)")
    if loss:
        warning = "; ".join(filter(None, [warning, f"accepted: {loss}, {KV_REUSE_LOSS_EFFECT}"]))
    slug = slugify(s.model_name or Path(s.model_dir).resolve().name)
    return Build(s, ckpt, slug, quant, block, tp, max_seq_len, max_input_len, max_num_tokens, warning,
                 kv_reuse=not loss)


def _check_choices(s: BuildSettings) -> None:
    if s.quant not in QUANTS:
        raise ConfigError(f"quantization must be one of {', '.join(QUANTS)}, got {s.quant!r}")
    if s.kv_cache not in KV_CACHES:
        raise ConfigError(f"KV cache must be one of {', '.join(KV_CACHES)}, got {s.kv_cache!r}")
    if s.batch_scheduler_policy not in SCHEDULER_POLICIES:
        raise ConfigError(f"batch scheduler policy must be one of {', '.join(SCHEDULER_POLICIES)}, "
                          f"got {s.batch_scheduler_policy!r}")
    if not 1 <= s.max_batch_size <= 2048:
        raise ConfigError(f"max_batch_size must be between 1 and 2048, got {s.max_batch_size}")
    if s.tp < 0 or s.max_seq_len < 0 or s.max_num_tokens < 0:
        raise ConfigError("tp, max_seq_len and max_num_tokens must be positive (or 0 for the default)")
    if not 0 < s.kv_cache_free_gpu_mem_fraction < 1:
        raise ConfigError(f"kv_cache_free_gpu_mem_fraction must be between 0 and 1, got "
                          f"{s.kv_cache_free_gpu_mem_fraction}")
    if not 1 <= s.calib_samples <= 4096 or s.calib_max_seq_len < 16 or s.calib_batch_size < 1:
        raise ConfigError("calib_samples must be 1..4096, calib_max_seq_len >= 16 and calib_batch_size >= 1")


def _quantization(s: BuildSettings, ckpt: Checkpoint, tp: int) -> tuple[str, int]:
    """(quant, AWQ group size) for this checkpoint; an AWQ checkpoint can only become an AWQ engine."""
    if ckpt.autoawq_group_size:
        if s.quant != "int4_awq" or s.kv_cache != "auto":
            raise ConfigError(f"{ckpt.path} is already AWQ-quantized; it builds only as int4_awq with a bf16 KV "
                              "cache. For fp8, w4a8_awq, bf16 or a quantized KV cache start from the bf16 checkpoint")
        if tp != 1:
            raise ConfigError("an AutoAWQ checkpoint builds only with tp=1: the pinned release splits Qwen v1's "
                              "fused c_attn for tensor parallelism in the GPTQ layout, not AWQ's; quantize the bf16 "
                              "checkpoint instead (the default)")
        return "autoawq", ckpt.autoawq_group_size
    if s.quant in ("int4_awq", "w4a8_awq"):
        return s.quant, awq_block_size(ckpt.spec, tp, s.awq_block_size)
    if s.awq_block_size:
        raise ConfigError(f"--awq-block-size applies to int4_awq and w4a8_awq, not {s.quant}")
    return s.quant, 0
