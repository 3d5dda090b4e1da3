"""Helpers shared by the Python-backend models: reading inputs, parameters, and error responses.

Imported only inside Triton's Python backend stub (where `triton_python_backend_utils` exists).
Errors carry a bracketed status word first (`[INVALID_ARGUMENT] max_tokens: ...`) because Triton's
streaming gRPC API passes only the message text to clients; `client/` maps that word to its errors.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from wingpt.engine_errors import CANCELLED, INTERNAL, INVALID_ARGUMENT, UNAVAILABLE
from wingpt.errors import InvalidRequest

_CODES = {INVALID_ARGUMENT: "INVALID_ARG", UNAVAILABLE: "UNAVAILABLE", INTERNAL: "INTERNAL", CANCELLED: "CANCELLED"}


def parameters(args: dict[str, Any]) -> dict[str, str]:
    """The `parameters` of this model's rendered config.pbtxt as plain strings."""
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def error(kind: str, message: str) -> pb_utils.TritonError:
    # TritonError exists only once the stub has started, so it is looked up at call time.
    return pb_utils.TritonError(f"[{kind}] {message}", getattr(pb_utils.TritonError, _CODES[kind]))


def error_response(kind: str, message: str) -> pb_utils.InferenceResponse:
    return pb_utils.InferenceResponse(output_tensors=[], error=error(kind, message))


def invalid(exc: InvalidRequest) -> pb_utils.InferenceResponse:
    return error_response(INVALID_ARGUMENT, str(exc))


def optional_array(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def optional_scalar(request: Any, name: str, field: str | None = None) -> Any:
    """A one-element input as a Python scalar, None when not sent; several elements is an error."""
    array = optional_array(request, name)
    if array is None:
        return None
    if array.size != 1:
        raise InvalidRequest(field or name, f"expected one value, got {array.size}")
    value = array.reshape(-1)[0]
    return value.item() if hasattr(value, "item") else value


def optional_text(request: Any, name: str) -> str | None:
    """A one-element string input decoded as UTF-8, naming the field when the bytes are not UTF-8."""
    value = optional_scalar(request, name)
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(name, f"is not valid UTF-8 (byte {exc.start})") from None
    return str(value)


def optional_texts(request: Any, name: str) -> list[str]:
    array = optional_array(request, name)
    if array is None:
        return []
    out = []
    for item in array.reshape(-1):
        try:
            out.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
        except UnicodeDecodeError as exc:
            raise InvalidRequest(name, f"is not valid UTF-8 (byte {exc.start})") from None
    return [s for s in out if s]


def tensor(name: str, value: Any, dtype: Any) -> pb_utils.Tensor:
    return pb_utils.Tensor(name, np.asarray(value, dtype=dtype))
