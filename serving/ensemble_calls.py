"""Raw tritonclient calls to the ensemble: what the serving-core tests and bench-overhead use to see
exactly what Triton sends (the product's client library is client/)."""

from __future__ import annotations

import json
import queue
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

DTYPES = {np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32", np.dtype(np.uint64): "UINT64",
          np.dtype(np.bool_): "BOOL", np.dtype(object): "BYTES"}


def _input(name: str, value: Any) -> grpcclient.InferInput:
    if isinstance(value, str | bytes):
        array = np.array([[value.encode() if isinstance(value, str) else value]], dtype=object)
    elif isinstance(value, list):
        array = np.array([[v.encode() for v in value]], dtype=object)
    elif isinstance(value, bool):
        array = np.array([[value]], dtype=np.bool_)
    elif isinstance(value, float):
        array = np.array([[value]], dtype=np.float32)
    elif name == "random_seed":
        array = np.array([[value]], dtype=np.uint64)
    else:
        array = np.array([[value]], dtype=np.int32)
    tensor = grpcclient.InferInput(name, list(array.shape), DTYPES[array.dtype])
    tensor.set_data_from_numpy(array)
    return tensor


def chat_inputs(messages: list[dict] | None = None, **params: Any) -> dict[str, Any]:
    inputs = dict(params)
    if messages is not None:
        inputs["messages"] = json.dumps(messages, ensure_ascii=False)
    return inputs


@dataclass
class StreamResult:
    deltas: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    error: str | None = None
    triage: dict | None = None
    # the output names each response carried, in arrival order
    outputs: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.deltas)


class EnsembleStream:
    """One gRPC stream carrying one request, read response by response."""

    def __init__(self, url: str, inputs: dict[str, Any], request_id: str | None = "") -> None:
        """`request_id` "" sends a fresh unique id, None none at all (as plain clients do), else that id."""
        self.client = grpcclient.InferenceServerClient(url)
        self.responses: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.responses.put((result, error)))
        self.client.async_stream_infer(
            "ensemble", [_input(k, v) for k, v in inputs.items()],
            request_id=uuid.uuid4().hex if request_id == "" else (request_id or ""),
            enable_empty_final_response=True,
        )
        self.result = StreamResult()
        self.done = False

    def read(self, count: int | None = None, timeout: float = 120.0) -> StreamResult:
        """Read `count` more text responses (or to the end)."""
        read = 0
        while not self.done and (count is None or read < count):
            result, error = self.responses.get(timeout=timeout)
            if error is not None:
                self.result.error, self.done = str(error), True
                break
            self.result.outputs.append(tuple(o.name for o in result.get_response().outputs))
            triage = result.as_numpy("triage")
            if triage is not None:
                self.result.triage = json.loads(triage.reshape(-1)[0].decode("utf-8"))
            output = result.as_numpy("text_output")
            if output is not None:
                self.result.deltas.append(output.reshape(-1)[0].decode("utf-8"))
                self.result.arrivals.append(time.monotonic())
                read += 1
            self.done = result.get_response().parameters["triton_final_response"].bool_param
        return self.result

    def cancel(self) -> None:
        self.client.stop_stream(cancel_requests=True)
        self.client.close()

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def call(url: str, request_id: str | None = "", **inputs: Any) -> StreamResult:
    stream = EnsembleStream(url, inputs, request_id)
    try:
        return stream.read()
    finally:
        stream.close()


def engine_metric(metrics_url: str, request_type: str) -> float:
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("nv_trt_llm_request_metrics{") and f'request_type="{request_type}"' in line:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no nv_trt_llm_request_metrics{{request_type={request_type!r}}} in {metrics_url}")
