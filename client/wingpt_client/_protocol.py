"""Wire format shared by the sync and asyncio clients: requests, responses, deadlines, backoff.

Requests are built straight into Triton's protobuf messages (tensor bytes packed by hand, no
numpy) and `text_output` is read straight from the response bytes: this is the per-token hot path
of a streamed answer, so it avoids tritonclient's InferInput/InferResult round trips while staying
on the protocol tritonclient defines (`service_pb2`).
"""

from __future__ import annotations

import json
import random
import struct
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from tritonclient.grpc import model_config_pb2, service_pb2

from wingpt_client.config import ClientConfig
from wingpt_client.errors import InvalidRequestError, UnavailableError, WingptClientError, error_from_message

# str: one user turn; otherwise {role: system|user|assistant, content} turns, oldest first.
Messages = str | Sequence[Mapping[str, str]]


class SamplingOptions(TypedDict, total=False):
    """Decoding settings; any left out take the server's defaults (WiNGPT2's card: greedy, repetition_penalty 1.1).

    Greedy is `temperature=0` (or `top_k=1`); `seed` makes sampling repeatable; `stop` ends the
    answer at any of these strings; `bad_words` are never generated. `end_id=-1` ignores the model's
    end-of-text token, so the answer has exactly `max_tokens` tokens (for load tests, as TensorRT-LLM).
    """

    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    seed: int
    stop: Sequence[str]
    bad_words: Sequence[str]
    end_id: int


# option -> (ensemble input, Triton datatype, struct format)
_SCALARS: dict[str, tuple[str, str, str]] = {
    "max_tokens": ("max_tokens", "INT32", "<i"),
    "temperature": ("temperature", "FP32", "<f"),
    "top_k": ("top_k", "INT32", "<i"),
    "top_p": ("top_p", "FP32", "<f"),
    "repetition_penalty": ("repetition_penalty", "FP32", "<f"),
    "seed": ("random_seed", "UINT64", "<Q"),
    "end_id": ("end_id", "INT32", "<i"),
}
_WORD_LISTS = {"stop": "stop_words", "bad_words": "bad_words"}
_FINAL = "triton_final_response"


@dataclass(frozen=True)
class Health:
    """Triton's liveness and readiness, and whether the chat model itself is loaded."""

    live: bool
    ready: bool
    model_ready: bool

    @property
    def ok(self) -> bool:
        return self.live and self.ready and self.model_ready


@dataclass(frozen=True)
class ModelInfo:
    """What is being served. `embedded_default` is True for the random-weight smoke-test model,
    whose answers are meaningless: a service should refuse to go live on it."""

    name: str
    server_version: str
    platform: str
    decoupled: bool
    max_batch_size: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    embedded_default: bool
    note: str
    disclaimer: str  # the model card's disclaimer, as this server is configured to show it


@dataclass(frozen=True)
class Triage:
    """The server's clinical red-flag assessment of the patient's latest message.

    It arrives before the first text delta. When `flagged`, show `notice` (urgent-care advice, in
    Chinese) above the answer, prominently: the model's answer may still follow, but the patient
    must not have to read an essay to learn that this needs a doctor now.
    """

    level: str  # "none" | "urgent" | "emergency"
    categories: tuple[str, ...]
    notice: str

    @property
    def flagged(self) -> bool:
        return self.level != "none"

    @classmethod
    def from_json(cls, raw: str) -> Triage:
        try:
            body = json.loads(raw)
            return cls(level=str(body["level"]), categories=tuple(map(str, body["categories"])),
                       notice=str(body["notice"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise WingptClientError(f"the server sent a malformed triage output ({exc})") from None


def new_request_id() -> str:
    # The server only echoes and logs it (it makes its own engine id); a unique one keeps log lines traceable.
    return uuid.uuid4().hex


def encode_messages(messages: Messages) -> bytes:
    turns = [{"role": "user", "content": messages}] if isinstance(messages, str) else [dict(m) for m in messages]
    try:
        return json.dumps(turns, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"messages: cannot be sent as JSON ({exc})") from None


def build_request(
    model: str, messages: bytes, stream: bool, sampling: Mapping[str, object], request_id: str
) -> service_pb2.ModelInferRequest:
    """One `ensemble` request; inputs are [1, 1] (or [1, N] word lists) as the ensemble's batch 1."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.parameters["triton_enable_empty_final_response"].bool_param = True

    def add(name: str, datatype: str, shape: tuple[int, int], raw: bytes) -> None:
        tensor = request.inputs.add()
        tensor.name = name
        tensor.datatype = datatype
        tensor.shape.extend(shape)
        request.raw_input_contents.append(raw)

    add("messages", "BYTES", (1, 1), _bytes_element(messages))
    add("stream", "BOOL", (1, 1), b"\x01" if stream else b"\x00")
    for option, value in sampling.items():
        if value is None:
            continue
        if option in _SCALARS:
            name, datatype, fmt = _SCALARS[option]
            try:
                add(name, datatype, (1, 1), struct.pack(fmt, value))
            except struct.error as exc:
                raise InvalidRequestError(f"{option}: {value!r} does not fit {datatype} ({exc})") from None
        elif option in _WORD_LISTS:
            words = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
            if words:
                raw = b"".join(_bytes_element(str(w).encode("utf-8")) for w in words)
                add(_WORD_LISTS[option], "BYTES", (1, len(words)), raw)
        else:
            known = sorted(SamplingOptions.__annotations__)
            raise TypeError(f"unknown sampling option {option!r}; expected one of {known}")
    return request


def _bytes_element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def parse_response(
    response: service_pb2.ModelStreamInferResponse, request_id: str
) -> tuple[str, bool, Triage | None]:
    """(text delta, is this the request's final response, the triage if this response carries it);
    raises the mapped error for an error response."""
    if response.error_message:
        raise error_from_message(response.error_message, request_id)
    infer = response.infer_response
    final = infer.parameters.get(_FINAL)
    text = ""
    triage = None
    for index, output in enumerate(infer.outputs):
        if index >= len(infer.raw_output_contents):
            break
        if output.name == "text_output":
            text = _decode_bytes_tensor(infer.raw_output_contents[index])
        elif output.name == "triage":
            triage = Triage.from_json(_decode_bytes_tensor(infer.raw_output_contents[index]))
    return text, bool(final is not None and final.bool_param), triage


def _decode_bytes_tensor(raw: bytes) -> str:
    parts = []
    offset = 0
    while offset + 4 <= len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        parts.append(raw[offset:offset + length])
        offset += length
    return b"".join(parts).decode("utf-8", errors="replace")


def model_info_from(config: model_config_pb2.ModelConfig, server: service_pb2.ServerMetadataResponse) -> ModelInfo:
    params = config.parameters
    return ModelInfo(
        name=config.name,
        server_version=server.version,
        platform=config.platform or config.backend,
        decoupled=config.model_transaction_policy.decoupled,
        max_batch_size=config.max_batch_size,
        inputs=tuple(i.name for i in config.input),
        outputs=tuple(o.name for o in config.output),
        embedded_default=params["embedded_default"].string_value == "true" if "embedded_default" in params else False,
        note=params["model_note"].string_value if "model_note" in params else "",
        disclaimer=params["disclaimer"].string_value if "disclaimer" in params else "",
    )


class Deadline:
    """One deadline across every attempt of a call, so retries never extend what the caller allowed."""

    def __init__(self, timeout_s: float | None) -> None:
        self._at = None if timeout_s is None else time.monotonic() + timeout_s

    def remaining(self) -> float | None:
        return None if self._at is None else self._at - time.monotonic()


def backoff_s(base_s: float, attempt: int) -> float:
    """Exponential backoff with ±20 % jitter, so many clients that lost the server do not return in step."""
    return base_s * (2 ** attempt) * random.uniform(0.8, 1.2)


def retry_delay(
    error: WingptClientError, received: bool, attempt: int, config: ClientConfig, deadline: Deadline
) -> float | None:
    """Seconds to wait before trying `attempt + 1` again, or None to give up. Only a failure to
    reach the server (UnavailableError from the RPC) before any response is retried: then the
    caller has seen nothing, so a retry can never duplicate or splice an answer."""
    if received or type(error) is not UnavailableError or attempt >= config.retries:
        return None
    delay = backoff_s(config.retry_backoff_s, attempt)
    remaining = deadline.remaining()
    if remaining is not None and remaining <= delay:
        return None
    return delay
