"""Sampling parameters: validation, the model card's defaults, and the batched sampler.

Preprocessing validates and resolves defaults once (so a bad value is rejected before any
engine work and every engine sees the same resolved values); the PyTorch engine samples with
them. Greedy decoding with `repetition_penalty` 1.1 is what the WiNGPT2 model card recommends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from wingpt.errors import InvalidRequest

DEFAULT_REPETITION_PENALTY = 1.1


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings; temperature 0 or top_k 1 means greedy (the default)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


def _finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidRequest(field, f"must be a finite number, got {value}")
    return value


def resolve_sampling(
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    seed: int | None = None,
) -> SamplingParams:
    """Validate client-supplied values (None = not sent) and fill in the defaults."""
    params = SamplingParams()
    if temperature is not None and _finite("temperature", temperature) < 0:
        raise InvalidRequest("temperature", f"must be >= 0, got {temperature}")
    if top_k is not None and top_k < 0:
        raise InvalidRequest("top_k", f"must be >= 0 (0 = no top-k), got {top_k}")
    if top_p is not None and not (0.0 < _finite("top_p", top_p) <= 1.0):
        raise InvalidRequest("top_p", f"must be in (0, 1], got {top_p}")
    if repetition_penalty is not None and _finite("repetition_penalty", repetition_penalty) <= 0:
        raise InvalidRequest("repetition_penalty", f"must be > 0, got {repetition_penalty}")
    if seed is not None and seed < 0:
        raise InvalidRequest("random_seed", f"must be >= 0, got {seed}")
    return SamplingParams(
        temperature=params.temperature if temperature is None else float(temperature),
        top_k=params.top_k if top_k is None else int(top_k),
        top_p=params.top_p if top_p is None else float(top_p),
        repetition_penalty=params.repetition_penalty if repetition_penalty is None else float(repetition_penalty),
        seed=seed,
    )


def resolve_max_tokens(max_tokens: int | None, default: int, limit: int) -> int:
    """`max_tokens` defaults to the configured value and may not exceed the configured limit."""
    if max_tokens is None:
        return default
    if max_tokens <= 0:
        raise InvalidRequest("max_tokens", f"must be > 0, got {max_tokens}")
    if max_tokens > limit:
        raise InvalidRequest("max_tokens", f"must be <= {limit} (the server's limit), got {max_tokens}")
    return int(max_tokens)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """CTRL-style penalty as transformers applies it, batched: for every token already in a row's
    prompt or output, divide a positive logit by the row's penalty and multiply a negative one.

    logits [B, V] float, seen [B, V] bool, penalties [B] float.
    """
    p = penalties.to(logits.dtype).unsqueeze(1)
    penalised = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, penalised, logits)


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from one row of (already penalised) logits."""
    if params.greedy:
        return int(torch.argmax(logits))
    logits = logits.float() / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= params.top_p  # keep the first token always
        logits = logits.scatter(0, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
