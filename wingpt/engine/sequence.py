"""One generation as the scheduler sees it: its tokens, its KV blocks and how far its KV is computed."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from wingpt.engine.requests import FINISH_LENGTH, FINISH_STOP, GenerationRequest


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    request: GenerationRequest
    tokens: list[int]  # prompt, then generated tokens
    prompt_len: int
    generator: torch.Generator | None = None
    status: Status = Status.WAITING
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[bytes] = field(default_factory=list)  # of the leading full blocks, for prefix reuse
    computed: int = 0  # tokens whose KV is in the cache
    # Leading tokens whose KV came from prefill chunks (or the prefix cache): only their blocks are shared, see
    # BlockManager.publish.
    prefilled: int = 0
    seen_row: int = -1  # row of the engine's token-history table (repetition penalty), held while it lives
    # While its last token is still being sampled on the device (engine.py, overlap): that token's row in
    # the running step's samples; the token itself is a placeholder until the engine reads it.
    pending: int = -1

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_len:]

    @property
    def uncomputed(self) -> int:
        """Tokens still to run through the model before the next token can be sampled."""
        return len(self.tokens) - self.computed

    def finish_reason(self) -> str | None:
        """Why the last token ends the sequence, if it does (end id, a stop sequence, max_new_tokens)."""
        request, generated = self.request, self.generated
        if generated[-1] == request.end_id:
            return FINISH_STOP
        for stop in request.stop_sequences:
            if stop and generated[-len(stop):] == stop:
                return FINISH_STOP
        if len(generated) >= request.max_new_tokens:
            return FINISH_LENGTH
        return None

    def banned_tokens(self) -> list[int]:
        """Last tokens of bad sequences whose prefix the output currently ends with."""
        banned, generated = [], self.generated
        for bad in self.request.bad_sequences:
            prefix = bad[:-1]
            if not prefix or generated[-len(prefix):] == prefix:
                banned.append(bad[-1])
        return banned
