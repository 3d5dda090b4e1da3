"""The closed set of errors this client raises, and how server answers map onto it.

A backend service should branch on a handful of meanings, not on gRPC status codes or Triton's
message formats: fix the request, back off (overloaded), fail over (unavailable), give up (deadline),
or stop (cancelled). The server's models put a bracketed status word first in every error
(`[INVALID_ARGUMENT] max_tokens: must be > 0, got 0`, see wingpt/triton_io.py) because Triton's
streaming API passes only message text; Triton itself may prefix it (`in ensemble 'ensemble', ...`).
"""

from __future__ import annotations

import re

import grpc


class WingptClientError(Exception):
    """Base of every error raised here. Raised as itself only when the server failed internally
    (`[INTERNAL]`) or answered in a way this client does not know, so `except WingptClientError`
    is always enough."""

    default_code = "UNKNOWN"

    def __init__(self, message: str, *, code: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.request_id = request_id


class InvalidRequestError(WingptClientError):
    """The server refused the request as sent; `message` is the server's own text naming the field.
    Retrying the same request cannot help."""

    default_code = "INVALID_ARGUMENT"


class OverloadedError(WingptClientError):
    """The engine's queue is full (max_queue_size): back off or shed load; the request never ran."""

    default_code = "OVERLOADED"


class UnavailableError(WingptClientError):
    """No usable connection to the server (down, unreachable, TLS handshake failed) or it is shutting down."""

    default_code = "UNAVAILABLE"


class DeadlineExceededError(WingptClientError):
    """The per-call deadline passed; the server was told to stop the request."""

    default_code = "DEADLINE_EXCEEDED"


class CancelledError(WingptClientError):
    """The stream was closed or cancelled (by this process or the server) before its answer ended."""

    default_code = "CANCELLED"


_STATUS_WORD = re.compile(r"\[(INVALID_ARGUMENT|UNAVAILABLE|INTERNAL|CANCELLED)\]\s*")
_OVERLOAD = re.compile(r"overload|queue size|queue is full", re.IGNORECASE)
# TensorRT-LLM's executor refuses a full queue as an INTERNAL error with this text; the server maps it to
# `[UNAVAILABLE] server overloaded` (wingpt/engine_errors.py), and this is the client's second line of defence.
_TRTLLM_QUEUE_FULL = re.compile(r"Maximum queue size of \d+ has been reached", re.IGNORECASE)
_RESTRICTED = "protocol is restricted"

_BY_STATUS: dict[grpc.StatusCode, type[WingptClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: InvalidRequestError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.UNAUTHENTICATED: InvalidRequestError,
    grpc.StatusCode.PERMISSION_DENIED: InvalidRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


# Triton's python backend when a model's process has died (`python -m serving serve` restarts the server).
_DEAD_MODEL_PROCESS = "is not healthy"


def error_from_message(message: str, request_id: str | None = None) -> WingptClientError:
    """An error that arrived inside the stream (the RPC itself succeeded)."""
    if _TRTLLM_QUEUE_FULL.search(message):
        return OverloadedError(message, code="UNAVAILABLE", request_id=request_id)
    match = _STATUS_WORD.search(message)
    if match is None:
        if _DEAD_MODEL_PROCESS in message:  # the engine's process died; the server is being restarted
            return UnavailableError(message, request_id=request_id)
        return WingptClientError(message, request_id=request_id)
    word, text = match.group(1), message[match.end():]
    if word == "INVALID_ARGUMENT":
        return InvalidRequestError(text, code=word, request_id=request_id)
    if word == "UNAVAILABLE":
        cls = OverloadedError if _OVERLOAD.search(text) else UnavailableError
        return cls(text, code=word, request_id=request_id)
    if word == "CANCELLED":
        return CancelledError(text, code=word, request_id=request_id)
    return WingptClientError(text, code=word, request_id=request_id)


def error_from_rpc(exc: grpc.RpcError, request_id: str | None = None) -> WingptClientError:
    """An error that ended the RPC: connection, deadline, cancellation, or a refusal by Triton's frontend."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or code.name  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE and _RESTRICTED in details:
        # Triton answers a missing restricted-protocol header with UNAVAILABLE; it is a request problem.
        return InvalidRequestError(f"{details} (set token= and token_key=)", code=code.name, request_id=request_id)
    if code == grpc.StatusCode.UNAVAILABLE and _OVERLOAD.search(details):
        return OverloadedError(details, code=code.name, request_id=request_id)
    cls = _BY_STATUS.get(code, WingptClientError)
    return cls(details, code=code.name, request_id=request_id)

