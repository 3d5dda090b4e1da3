"""One answer for an engine's failure, whichever engine produced it (torch_llm or TensorRT-LLM's tensorrt_llm).

The two engines say the same thing differently: torch_llm puts the project's bracketed status word first
(`[UNAVAILABLE] server overloaded: 8 requests already waiting (max_queue_size)`, see wingpt/triton_io.py);
TensorRT-LLM's backend answers a full executor queue as an INTERNAL error with the text
"Maximum queue size of N has been reached, please try again later" (build_engine/pins.py says where),
and Triton's own scheduler says "Exceeds maximum queue size". The orchestrator passes each engine error
through `from_engine()` so a client sees `[UNAVAILABLE] server overloaded: ...` for both, and
`client/` maps that to OverloadedError. No Triton import here: the mapping is plain text to plain text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INVALID_ARGUMENT = "INVALID_ARGUMENT"
UNAVAILABLE = "UNAVAILABLE"
INTERNAL = "INTERNAL"
CANCELLED = "CANCELLED"
OVERLOADED_PREFIX = "server overloaded"

_BRACKETED = re.compile(r"\[(INVALID_ARGUMENT|UNAVAILABLE|INTERNAL|CANCELLED)\]\s*")
_TRTLLM_QUEUE_FULL = re.compile(r"Maximum queue size of (\d+) has been reached", re.IGNORECASE)
_TRITON_QUEUE_FULL = re.compile(r"exceeds maximum queue size", re.IGNORECASE)
_CANCELLED = re.compile(r"\bcancell?ed\b", re.IGNORECASE)
# TensorRT-LLM's exception text: "[TensorRT-LLM][ERROR] <what> (/src/file.cpp:123)" then a stack trace.
_TLLM_TAG = re.compile(r"\[TensorRT-LLM\]\[(?:ERROR|WARNING)\]\s*(?:Assertion failed:\s*)?")
_SOURCE_LOCATION = re.compile(r"\s*\([^()]*\.(?:cpp|cu|h):\d+\)\s*$")


@dataclass(frozen=True)
class EngineError:
    """What to tell the client: a status word of wingpt/triton_io.py (or CANCELLED) and a message."""

    kind: str
    message: str

    @property
    def overloaded(self) -> bool:
        return self.kind == UNAVAILABLE and self.message.startswith(OVERLOADED_PREFIX)

    @property
    def cancelled(self) -> bool:
        return self.kind == CANCELLED

    @property
    def text(self) -> str:
        return f"[{self.kind}] {self.message}"


def from_engine(message: str) -> EngineError:
    """The public status word and message for an engine's error text (torch_llm or TensorRT-LLM)."""
    queue = _TRTLLM_QUEUE_FULL.search(message)
    if queue is not None:
        return EngineError(UNAVAILABLE, f"{OVERLOADED_PREFIX}: the engine queue is full "
                                        f"({queue.group(1)} requests waiting, max_queue_size)")
    bracketed = _BRACKETED.search(message)
    if bracketed is not None:
        return EngineError(bracketed.group(1), _first_line(message[bracketed.end():]))
    if _TRITON_QUEUE_FULL.search(message):
        return EngineError(UNAVAILABLE, f"{OVERLOADED_PREFIX}: {_first_line(message)} (max_queue_size)")
    if _CANCELLED.search(message):
        return EngineError(CANCELLED, "the request was cancelled")
    return EngineError(INTERNAL, f"engine failed: {_first_line(message)}")


def _first_line(text: str) -> str:
    """The message without TensorRT-LLM's tag, source location and stack trace."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = _TLLM_TAG.sub("", lines[0]) if lines else ""
    return _SOURCE_LOCATION.sub("", first) or "no message"
