"""Typed server settings: environment variables (or CLI flags) -> `ServerSettings` -> rendered configs.

Every knob is listed here with its environment variable; the README's configuration table is the
same list. The Triton models never read the environment: they read the parameters that the
templating step wrote into their `config.pbtxt` from these settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from wingpt.engine.faults import FaultInjection

TARGETS = ("cpu", "gpu-torch", "gpu-trtllm")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class ServerSettings:
    """What `make serve` runs. Defaults serve the embedded model on the CPU."""

    model_dir: str = field(default="", metadata={"env": "MODEL_DIR",
                                                 "help": "checkpoint dir; empty = embedded default"})
    target: str = field(default="cpu", metadata={"env": "WINGPT_TARGET", "help": "cpu | gpu-torch | gpu-trtllm"})
    cache_dir: str = field(default=str(Path.home() / ".cache" / "wingpt"),
                           metadata={"env": "WINGPT_CACHE_DIR", "help": "where the embedded model is generated"})
    repo_dir: str = field(default="build/model_repository",
                          metadata={"env": "WINGPT_REPO_DIR", "help": "where the rendered repository is written"})
    http_port: int = field(default=8000, metadata={"env": "TRITON_HTTP_PORT", "help": "Triton HTTP port"})
    grpc_port: int = field(default=8001, metadata={"env": "TRITON_GRPC_PORT", "help": "Triton gRPC port"})
    metrics_port: int = field(default=8002, metadata={"env": "TRITON_METRICS_PORT", "help": "Prometheus metrics"})
    host: str = field(default="127.0.0.1", metadata={"env": "TRITON_HOST", "help": "address Triton binds to"})
    max_batch_size: int = field(default=8, metadata={"env": "WINGPT_MAX_BATCH_SIZE",
                                                     "help": "sequences generated together (in-flight batch)"})
    max_queue_size: int = field(default=64, metadata={"env": "WINGPT_MAX_QUEUE_SIZE",
                                                      "help": "requests waiting beyond the batch; more are rejected"})
    priority_levels: str = field(default="emergency", metadata={
        "env": "WINGPT_PRIORITY_LEVELS",
        "help": "triage levels admitted ahead of ordinary requests, most urgent first "
                "(emergency | emergency,urgent | none)"})
    priority_reserved: int = field(default=0, metadata={
        "env": "WINGPT_PRIORITY_RESERVED",
        "help": "places of the waiting line (WINGPT_MAX_QUEUE_SIZE) that only priority requests may take"})
    context_window: int = field(default=4096, metadata={"env": "WINGPT_CONTEXT_WINDOW",
                                                        "help": "prompt + output tokens per sequence"})
    max_tokens_default: int = field(default=512, metadata={"env": "WINGPT_MAX_TOKENS_DEFAULT",
                                                           "help": "max_tokens when a request sends none"})
    max_tokens_limit: int = field(default=2048, metadata={"env": "WINGPT_MAX_TOKENS_LIMIT",
                                                          "help": "largest max_tokens a request may ask for"})
    system_prompt: str = field(default="", metadata={"env": "WINGPT_SYSTEM_PROMPT",
                                                     "help": "preamble before the first turn (hospital policy)"})
    safety_rules: str = field(default="", metadata={
        "env": "WINGPT_SAFETY_RULES", "help": "triage red-flag rules (YAML, reloaded on change); empty = built-in"})
    cancel_check_period_ms: int = field(default=100, metadata={
        "env": "WINGPT_CANCEL_CHECK_PERIOD_MS",
        "help": "how often the orchestrator looks for cancelled requests (a client's cancel, disconnect, deadline)"})
    cuda_graph: int = field(default=1, metadata={
        "env": "WINGPT_CUDA_GRAPH", "help": "1: decode steps replay as CUDA graphs per batch size (GPU torch engine)"})
    kv_cache_free_gpu_mem_fraction: float = field(default=0.85, metadata={
        "env": "WINGPT_KV_CACHE_FREE_GPU_MEM_FRACTION",
        "help": "GPU torch engine: share of the memory free after loading the weights given to the paged KV cache"})
    kv_cache_bytes: int = field(default=0, metadata={
        "env": "WINGPT_KV_CACHE_BYTES",
        "help": "KV cache budget in bytes (CPU; on a GPU overrides the fraction); 0 = batch x context window"})
    kv_block_size: int = field(default=32, metadata={"env": "WINGPT_KV_BLOCK_SIZE",
                                                     "help": "tokens per KV cache block (the unit of prefix reuse)"})
    enable_kv_cache_reuse: int = field(default=1, metadata={
        "env": "WINGPT_ENABLE_KV_CACHE_REUSE",
        "help": "1: a new request reuses the cached KV blocks of an identical prefix (TensorRT-LLM's knob name)"})
    max_num_tokens: int = field(default=8192, metadata={
        "env": "WINGPT_MAX_NUM_TOKENS", "help": "tokens per engine step; longer prefills are chunked"})
    dtype: str = field(default="", metadata={"env": "WINGPT_DTYPE",
                                             "help": "float32 | bfloat16 | float16; empty = by target"})
    exit_timeout_s: int = field(default=30, metadata={"env": "TRITON_EXIT_TIMEOUT",
                                                      "help": "seconds SIGTERM waits for in-flight streams"})
    log_verbose: int = field(default=0, metadata={"env": "TRITON_LOG_VERBOSE", "help": "Triton verbose log level"})
    openai: int = field(default=1, metadata={
        "env": "WINGPT_OPENAI", "help": "1: `make serve` also runs the OpenAI-compatible endpoint; 0: off"})
    openai_host: str = field(default="127.0.0.1", metadata={
        "env": "WINGPT_OPENAI_HOST", "help": "address the OpenAI-compatible endpoint binds to (off loopback: keys)"})
    openai_port: int = field(default=9000, metadata={"env": "WINGPT_OPENAI_PORT",
                                                     "help": "port of the OpenAI-compatible endpoint (/v1)"})
    test_faults: str = field(default="", metadata={
        "env": "WINGPT_TEST_FAULTS",
        "help": "test builds only: request:<seed>,engine:<seed> makes a request with that random_seed fail its "
                "step, or break the engine; hold:<path> holds the engine still while that file exists "
                "(wingpt/engine/faults.py); never set in production"})

    @classmethod
    def from_env(cls, **overrides: object) -> ServerSettings:
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f.metadata["env"])
            if raw is not None and raw != "":
                values[f.name] = int(raw) if f.type == "int" else float(raw) if f.type == "float" else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"WINGPT_TARGET must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if not 0 < self.max_tokens_default <= self.max_tokens_limit < self.context_window:
            raise ValueError("need 0 < WINGPT_MAX_TOKENS_DEFAULT <= WINGPT_MAX_TOKENS_LIMIT < WINGPT_CONTEXT_WINDOW")
        if self.cuda_graph not in (0, 1):
            raise ValueError(f"WINGPT_CUDA_GRAPH must be 0 or 1, got {self.cuda_graph}")
        if self.max_batch_size < 1 or self.max_queue_size < 1:
            raise ValueError("WINGPT_MAX_BATCH_SIZE and WINGPT_MAX_QUEUE_SIZE must be >= 1")
        if not 0 <= self.priority_reserved <= self.max_queue_size:
            raise ValueError(f"WINGPT_PRIORITY_RESERVED must be between 0 and WINGPT_MAX_QUEUE_SIZE "
                             f"({self.max_queue_size}), got {self.priority_reserved}")
        self.priority  # noqa: B018 - validates WINGPT_PRIORITY_LEVELS
        if self.openai not in (0, 1):
            raise ValueError(f"WINGPT_OPENAI must be 0 or 1, got {self.openai}")
        FaultInjection.parse(self.test_faults)  # a typo fails at start, not as a silent no-op
        if not 0.0 < self.kv_cache_free_gpu_mem_fraction < 1.0:
            raise ValueError("WINGPT_KV_CACHE_FREE_GPU_MEM_FRACTION must be between 0 and 1, "
                             f"got {self.kv_cache_free_gpu_mem_fraction}")
        if self.enable_kv_cache_reuse not in (0, 1):
            raise ValueError(f"WINGPT_ENABLE_KV_CACHE_REUSE must be 0 or 1, got {self.enable_kv_cache_reuse}")
        if self.kv_cache_bytes < 0 or self.kv_block_size < 1 or self.max_num_tokens < 1:
            raise ValueError("WINGPT_KV_CACHE_BYTES must be >= 0, WINGPT_KV_BLOCK_SIZE and WINGPT_MAX_NUM_TOKENS >= 1")
        if self.dtype not in ("", "float32", "bfloat16", "float16"):
            raise ValueError(f"WINGPT_DTYPE must be float32, bfloat16 or float16, got {self.dtype!r}")

    @property
    def priority(self) -> tuple[str, ...]:
        """WINGPT_PRIORITY_LEVELS as levels, most urgent first; () for `none`."""
        raw = self.priority_levels.strip()
        if raw == "none":
            return ()
        levels = tuple(part.strip() for part in raw.split(","))
        if len(set(levels)) != len(levels) or not set(levels) <= {"emergency", "urgent"}:
            raise ValueError("WINGPT_PRIORITY_LEVELS must be `none` or a comma-separated list of emergency, "
                             f"urgent (most urgent first), got {self.priority_levels!r}")
        return levels

    @property
    def resolved_dtype(self) -> str:
        return self.dtype or ("float32" if self.target == "cpu" else "bfloat16")

    @property
    def device(self) -> str:
        return "cpu" if self.target == "cpu" else "cuda"


def settings_table() -> list[tuple[str, str, str]]:
    """(env var, default, help) rows: the README's configuration table is generated from this."""
    return [(f.metadata["env"], str(f.default), f.metadata["help"]) for f in fields(ServerSettings)]
