"""One chat request as the orchestrator reads it: validated inputs, the templated prompt, decoding values.

Everything a client can send is checked here once, before any engine work; a rejection names the
field (InvalidRequest). Input names are those of NVIDIA's tensorrtllm_backend ensemble plus `messages`.
The reading of Triton tensors is behind the small `Inputs` protocol, so this runs (and is fuzzed)
without a Triton server too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from wingpt.chat_template import Message, build_prompt_ids, parse_messages
from wingpt.errors import InvalidRequest
from wingpt.sampling import SamplingParams, resolve_max_tokens, resolve_sampling
from wingpt.tokenizer import QwenTokenizer


class Inputs(Protocol):
    """A request's optional inputs by name (None = not sent)."""

    def scalar(self, name: str) -> Any: ...
    def text(self, name: str) -> str | None: ...
    def texts(self, name: str) -> list[str]: ...


@dataclass(frozen=True)
class Limits:
    """The server's settings that bound a request (rendered into the model's config)."""

    context_window: int
    max_tokens_default: int
    max_tokens_limit: int
    system_prompt: str = ""


@dataclass(frozen=True)
class ChatRequest:
    prompt_ids: list[int]
    turns: list[Message]  # what the safety rules read (a raw prompt is read whole)
    max_tokens: int
    sampling: SamplingParams
    end_id: int
    pad_id: int
    stream: bool
    stop_words: list[str] = field(default_factory=list)
    bad_words: list[str] = field(default_factory=list)


def read_chat_request(inputs: Inputs, tok: QwenTokenizer, limits: Limits) -> ChatRequest:
    """Validate and resolve one request; raises InvalidRequest naming the offending field."""
    max_tokens = resolve_max_tokens(inputs.scalar("max_tokens"), limits.max_tokens_default, limits.max_tokens_limit)
    sampling = resolve_sampling(
        temperature=inputs.scalar("temperature"),
        top_k=inputs.scalar("top_k"),
        top_p=inputs.scalar("top_p"),
        repetition_penalty=inputs.scalar("repetition_penalty"),
        seed=inputs.scalar("random_seed"),
    )
    ids, turns = _prompt(inputs, tok, limits, max_tokens)
    end_id, pad_id = inputs.scalar("end_id"), inputs.scalar("pad_id")
    return ChatRequest(
        prompt_ids=ids,
        turns=turns,
        max_tokens=max_tokens,
        sampling=sampling,
        end_id=tok.end_id if end_id is None else int(end_id),
        pad_id=tok.pad_id if pad_id is None else int(pad_id),
        stream=bool(inputs.scalar("stream")),
        stop_words=inputs.texts("stop_words"),
        bad_words=inputs.texts("bad_words"),
    )


def _prompt(inputs: Inputs, tok: QwenTokenizer, limits: Limits, max_tokens: int) -> tuple[list[int], list[Message]]:
    text = inputs.text("text_input")
    messages = inputs.text("messages")
    if (text is None) == (messages is None):
        raise InvalidRequest("messages", "send exactly one of 'messages' (chat) or 'text_input' (raw prompt)")
    budget = limits.context_window - max_tokens
    if messages is not None:
        turns = parse_messages(messages)
        ids, _dropped = build_prompt_ids(tok, turns, budget, limits.system_prompt)
        return ids, turns
    if not text.strip():
        raise InvalidRequest("text_input", "is empty")
    ids = tok.encode(text)
    if len(ids) > budget:
        raise InvalidRequest(
            "text_input",
            f"prompt is {len(ids)} tokens but only {budget} fit beside max_tokens={max_tokens} "
            f"in the {limits.context_window}-token context window",
        )
    return ids, [Message("user", text)]
