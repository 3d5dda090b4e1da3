"""OpenAI's error format, and which HTTP status each of the client library's errors becomes.

`{"error": {"message", "type", "param", "code"}}` is what the openai SDK, LangChain, Dify and
FastGPT parse; the status decides what they do: 400 fix the request, 401 fix the key, 404 wrong
model, 429 back off and retry (the engine's queue is full; `Retry-After` says when), 503 the model
server is down or restarting (retry later), 504 the deadline passed, 500 the server failed.
"""

from __future__ import annotations

from wingpt_client import (
    CancelledError,
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    UnavailableError,
    WingptClientError,
)


class OpenAIError(Exception):
    """An error answer: HTTP status, OpenAI's error object, and headers (Retry-After, WWW-Authenticate)."""

    def __init__(self, status: int, message: str, type_: str, *, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    @classmethod
    def invalid(cls, param: str | None, message: str) -> OpenAIError:
        text = message if param is None or message.startswith(param) else f"{param}: {message}"
        return cls(400, text, "invalid_request_error", param=param, code="invalid_value")

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def unauthorized() -> OpenAIError:
    return OpenAIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                       "invalid_request_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def model_not_found(name: str, served: str) -> OpenAIError:
    return OpenAIError(404, f"The model {name[:64]!r} does not exist; this endpoint serves {served!r}.",
                       "invalid_request_error", param="model", code="model_not_found")


def from_client_error(exc: WingptClientError, retry_after_s: int) -> OpenAIError:
    """The client library's closed error set, as OpenAI statuses. The server's messages name the field
    (`max_tokens: must be <= 256, got 300`), so the param is the text before the first colon."""
    retry = {"Retry-After": str(retry_after_s)}
    if isinstance(exc, InvalidRequestError):
        field, sep, _ = exc.message.partition(":")
        param = field.strip() if sep and " " not in field.strip() else None
        return OpenAIError(400, exc.message, "invalid_request_error", param=param, code="invalid_value")
    if isinstance(exc, OverloadedError):
        return OpenAIError(429, "The model server is overloaded (its queue is full); retry after a moment.",
                           "server_overloaded", code="server_overloaded", headers=retry)
    if isinstance(exc, UnavailableError):
        return OpenAIError(503, "The model server is unavailable; retry after a moment.", "service_unavailable",
                           code="service_unavailable", headers=retry)
    if isinstance(exc, DeadlineExceededError):
        return OpenAIError(504, "The answer took longer than this endpoint's deadline; it was stopped.",
                           "timeout", code="deadline_exceeded")
    if isinstance(exc, CancelledError):
        return OpenAIError(503, "The model server cancelled the request.", "service_unavailable",
                           code="cancelled", headers=retry)
    return OpenAIError(500, "The model server failed to answer.", "server_error", code="internal_error")
