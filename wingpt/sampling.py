"""Sampling parameters: validation, the model card's defaults, and the batched sampler.

Preprocessing validates and resolves defaults once (so a bad value is rejected before any
engine work and every engine sees the same resolved values); the PyTorch engine samples with
them. Greedy decoding with `repetition_penalty` 1.1 is what the WiNGPT2 model card recommends.

The sampler is safe for every value validation accepts (issue 15: temperature 1e-37 used to make
the probabilities NaN and end the engine): logits are made finite before anything else, and the
temperature divides logits already shifted so that the best one is 0. Every scaled logit is then
<= 0 with the best exactly 0, so the softmax always has a 1 in it and can neither overflow nor be
NaN; as the temperature goes to 0 this is greedy decoding, which is what a degenerate temperature
gets, and a huge one is uniform sampling. An extreme repetition penalty cannot push a logit to
+-inf either (it is clamped to the float range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from wingpt.errors import InvalidRequest

DEFAULT_REPETITION_PENALTY = 1.1
MAX_SEED = 2**64 - 1  # tensorrt_llm's `random_seed` is a UINT64, and torch.Generator takes the same range
_FLOAT_MAX = torch.finfo(torch.float32).max


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
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidRequest("random_seed", f"must be in [0, 2**64 - 1], got {seed}")
    return SamplingParams(
        temperature=params.temperature if temperature is None else float(temperature),
        top_k=params.top_k if top_k is None else int(top_k),
        top_p=params.top_p if top_p is None else float(top_p),
        repetition_penalty=params.repetition_penalty if repetition_penalty is None else float(repetition_penalty),
        seed=None if seed is None else int(seed),
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


def finite_logits(logits: torch.Tensor) -> torch.Tensor:
    """float32 logits with NaN as impossible (-inf) and +-inf as the largest finite values, so that
    argmax, the penalty and the softmax below never see a NaN or an inf - inf. In place when `logits` are
    float32 already (a fresh [batch, vocabulary] copy per step was ~14 % of a CPU decode step)."""
    return logits.float().nan_to_num_(nan=float("-inf"), posinf=_FLOAT_MAX, neginf=-_FLOAT_MAX)


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from one row of (already finite and penalised) logits; see the module doc for why
    the shifted form is safe for any temperature > 0."""
    if params.greedy:
        return int(torch.argmax(logits))
    logits = logits.float()
    best = logits.max()
    if not torch.isfinite(best):
        raise ValueError("no token can be sampled: every logit is -inf or NaN")
    logits = (logits - best) / params.temperature
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


def penalise_repeats(logits: torch.Tensor, history: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """CTRL-style penalty exactly as transformers' `RepetitionPenaltyLogitsProcessor` applies it, batched:
    every token id in a row's `history` (prompt and output so far; padding repeats one of its ids) has a
    positive logit divided by the row's penalty and a negative one multiplied. O(rows x history), not x vocab.

    logits [B, V] float (changed in place and returned), history [B, L] long, penalties [B] float.
    The result stays finite for any penalty > 0, and an impossible (-inf) token stays impossible.
    """
    p = penalties.to(logits.dtype).clamp(min=torch.finfo(logits.dtype).tiny).unsqueeze(1)
    scores = logits.gather(1, history)
    limit = torch.finfo(logits.dtype).max
    penalised = torch.where(scores < 0, scores * p, scores / p).clamp(-limit, limit)
    return logits.scatter_(1, history, torch.where(scores.isfinite(), penalised, scores))
