"""What a caller hands the engine and what it gets back: the engine's public types.

`on_tokens(new_ids, finish_reason)` and `on_error(exc)` are called from the engine's delivery thread
(never the step thread); finish_reason is None until the last call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wingpt.sampling import SamplingParams

FINISH_STOP = "stop"  # end id or a stop sequence
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"


class EngineOverloaded(RuntimeError):
    """The waiting queue is full: reject now rather than let latency grow without bound."""


class EngineStopped(RuntimeError):
    """The engine is shutting down or its loop died."""


@dataclass
class GenerationRequest:
    """One generation; `is_cancelled` is polled off the step thread (it may be a round trip to Triton)."""

    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    end_id: int
    on_tokens: Callable[[list[int], str | None], None]
    on_error: Callable[[Exception], None]
    stop_sequences: list[list[int]] = field(default_factory=list)
    bad_sequences: list[list[int]] = field(default_factory=list)
    is_cancelled: Callable[[], bool] = lambda: False
    arrival: float = field(default_factory=time.monotonic)


@dataclass
class EngineStats:
    """A snapshot for metrics; KV figures in blocks of `kv_tokens_per_block` tokens."""

    active: int
    waiting: int
    completed: int
    cancelled: int
    max_batch_size: int
    kv_blocks_max: int = 0
    kv_blocks_free: int = 0
    kv_blocks_used: int = 0
    kv_tokens_per_block: int = 0
    kv_blocks_used_peak: int = 0
    prefix_hit_tokens: int = 0  # prompt tokens whose KV came from the prefix cache instead of a prefill
    preempted: int = 0
    steps: int = 0
    graph_steps: int = 0  # decode steps run as a (padded, on a GPU captured) CUDA graph
    overlapped_steps: int = 0  # steps whose tokens were read only after the next step was launched
    healthy: bool = True
