"""The chat-completions request as this endpoint accepts it, and what it becomes for Triton.

Fields OpenAI defines and this deployment can honour map onto the ensemble's inputs; fields it
cannot honour (n > 1, tools, logprobs, JSON mode, ...) are refused with a 400 that names them rather
than silently ignored, because a client that asked for them would misread the answer. Extensions
that vLLM and TGI clients send as extra body fields (`top_k`, `repetition_penalty`, `ignore_eos`,
`min_tokens`, `bad_words`) are accepted beside them; anything else unknown is refused like OpenAI does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openai_api.errors import OpenAIError


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ContentPart(BaseModel):
    """One part of a list-form `content`; only text parts can reach a text model."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


# Refused unless they carry the neutral value a client sends when it does not use the feature.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "parallel_tool_calls": (None,),
    "functions": (None, []),
    "function_call": (None, "none"),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
}
# Accepted and not needed by this deployment: bookkeeping fields clients add.
_IGNORED = ("user", "store", "metadata", "service_tier", "safety_identifier", "prompt_cache_key")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions. Unknown fields are refused (400 naming them), as OpenAI does."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    # Extensions (vLLM/TGI names), sent by the openai SDK as `extra_body`.
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)
    ignore_eos: bool = False
    min_tokens: int | None = Field(default=None, ge=0)
    bad_words: list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        words = [value] if isinstance(value, str) else value or []
        if any(not w for w in words):
            raise ValueError("stop sequences must not be empty")
        return value

    def check_supported(self) -> None:
        """Raise a 400 naming the first field this deployment cannot honour."""
        extra = self.model_extra or {}
        for name, value in extra.items():
            if name in _IGNORED:
                continue
            if name not in _NEUTRAL:
                raise OpenAIError.invalid(name, f"Unrecognized request argument supplied: {name}")
            if value not in _NEUTRAL[name]:
                raise OpenAIError.invalid(name, "is not supported by this deployment (one text answer per request; "
                                                "no tools, log probabilities or penalties other than 0)")
        if self.response_format is not None and self.response_format.get("type") != "text":
            raise OpenAIError.invalid("response_format", "only {'type': 'text'} is supported")
        if self.stream_options is not None and not self.stream:
            raise OpenAIError.invalid("stream_options", "is only allowed with stream=true")
        if None not in (self.max_tokens, self.max_completion_tokens) and self.max_tokens != self.max_completion_tokens:
            raise OpenAIError.invalid("max_completion_tokens", "differs from max_tokens; send one of them")
        if self.min_tokens and not (self.ignore_eos and self.min_tokens <= (self.requested_max_tokens or 0)):
            raise OpenAIError.invalid("min_tokens", "is only supported with ignore_eos=true and min_tokens <= "
                                                    "max_tokens (the answer then has exactly max_tokens tokens)")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def turns(self) -> list[dict[str, str]]:
        """The conversation as the ensemble's `messages` input; refuses what a text chat cannot carry."""
        turns = []
        for i, message in enumerate(self.messages):
            where = f"messages[{i}]"
            role = _ROLES.get(message.role)
            if role is None:
                raise OpenAIError.invalid(f"{where}.role", f"role {message.role[:20]!r} is not supported; "
                                                           f"expected one of {', '.join(_ROLES)}")
            for name in ("tool_calls", "function_call", "audio", "refusal"):
                if (message.model_extra or {}).get(name):
                    raise OpenAIError.invalid(f"{where}.{name}", "is not supported by this deployment")
            turns.append({"role": role, "content": _text(message.content, where)})
        return turns

    def sampling(self, max_tokens_default: int) -> dict[str, object]:
        """Keyword options of `AsyncWingptClient.stream_chat`; left out = the server's model-card defaults."""
        options: dict[str, object] = {"max_tokens": self.requested_max_tokens or max_tokens_default}
        for name in ("temperature", "top_p", "top_k", "repetition_penalty", "seed"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        if self.stops:
            options["stop"] = self.stops
        if self.bad_words:
            options["bad_words"] = self.bad_words
        if self.ignore_eos:
            options["end_id"] = -1
        return options


def _text(content: str | list[ContentPart] | None, where: str) -> str:
    if content is None:
        raise OpenAIError.invalid(f"{where}.content", "must be a string or a list of text parts")
    if isinstance(content, str):
        return content
    pieces = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise OpenAIError.invalid(f"{where}.content[{j}].type",
                                      f"{part.type[:20]!r} parts are not supported; this model reads text only")
        pieces.append(part.text)
    return "".join(pieces)


def model_entry(model_id: str, created: int, metadata: dict[str, object]) -> dict[str, object]:
    """One GET /v1/models item: OpenAI's fields plus this deployment's metadata (the disclaimer among them)."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": "wingpt", **metadata}


FinishReason = Literal["stop", "length"]
