"""Synchronous client: one gRPC channel, shared by every thread and every concurrent stream.

tritonclient's own sync client holds one stream per client object (and one channel per client),
so N concurrent chats would need N connections. Here each chat is its own `ModelStreamInfer` RPC
on the shared channel: closing it cancels exactly that request on the server, which is what
`stop_stream(cancel_requests=True)` does for a whole tritonclient stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Self, Unpack

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from wingpt_client._base import ClientBase
from wingpt_client._protocol import (
    Deadline,
    Health,
    Messages,
    ModelInfo,
    SamplingOptions,
    build_request,
    encode_messages,
    model_info_from,
    new_request_id,
    parse_response,
    retry_delay,
)
from wingpt_client.config import CHANNEL_OPTIONS
from wingpt_client.errors import CancelledError, DeadlineExceededError, UnavailableError, error_from_rpc


class WingptClient(ClientBase):
    """WiNGPT2 chat over Triton gRPC. Thread-safe; create one per process and share it.

    >>> with WingptClient("triton:8001") as client:
    ...     for delta in client.stream_chat("宝宝15个月37.3度算发烧吗？", max_tokens=256):
    ...         print(delta, end="")
    """

    def _connect(self) -> None:
        credentials = self.config.credentials()
        target = self.config.target
        self._channel = (
            grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; streams still open on it end with CancelledError."""
        self._channel.close()

    def chat(self, messages: Messages, *, timeout_s: float | None = None, **sampling: Unpack[SamplingOptions]) -> str:
        """The whole answer at once (the server sends it in one response)."""
        with ChatStream(self, messages, False, timeout_s, sampling) as stream:
            return "".join(stream)

    def stream_chat(
        self, messages: Messages, *, timeout_s: float | None = None, **sampling: Unpack[SamplingOptions]
    ) -> ChatStream:
        """Text deltas as they are generated; close the stream (or leave its `with` block) to cancel.

        Nothing is sent until the first delta is asked for; `timeout_s` bounds the whole answer,
        counted from this call.
        """
        return ChatStream(self, messages, True, timeout_s, sampling)

    def health(self, *, timeout_s: float | None = None) -> Health:
        deadline = Deadline(self._timeout(timeout_s))
        return Health(
            live=self._unary(self._stub.ServerLive, service_pb2.ServerLiveRequest(), deadline).live,
            ready=self._unary(self._stub.ServerReady, service_pb2.ServerReadyRequest(), deadline).ready,
            model_ready=self._unary(
                self._stub.ModelReady, service_pb2.ModelReadyRequest(name=self.config.model), deadline
            ).ready,
        )

    def model_info(self, *, timeout_s: float | None = None) -> ModelInfo:
        deadline = Deadline(self._timeout(timeout_s))
        config = self._unary(self._stub.ModelConfig, service_pb2.ModelConfigRequest(name=self.config.model), deadline)
        server = self._unary(self._stub.ServerMetadata, service_pb2.ServerMetadataRequest(), deadline)
        return model_info_from(config.config, server)

    def _unary(self, method: Any, request: Any, deadline: Deadline) -> Any:
        attempt = 0
        while True:
            try:
                return method(request, timeout=deadline.remaining(), metadata=self._metadata)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                delay = retry_delay(error, False, attempt, self.config, deadline)
                if delay is None:
                    raise error from None
            attempt += 1
            self._wait_for_channel(delay)

    def _wait_for_channel(self, delay_s: float) -> None:
        """Back off for `delay_s`, but go again as soon as the channel reconnects."""
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=delay_s)
        except grpc.FutureTimeoutError:
            ready.cancel()

    def _open(self, request: service_pb2.ModelInferRequest, timeout_s: float | None) -> Any:
        return self._stub.ModelStreamInfer(iter((request,)), timeout=timeout_s, metadata=self._metadata)


class ChatStream(Iterator[str]):
    """Text deltas of one answer. `close()` (from any thread) cancels the request on the server;
    so does leaving a `with` block early or dropping the last reference."""

    def __init__(
        self, client: WingptClient, messages: Messages, stream: bool, timeout_s: float | None,
        sampling: Mapping[str, object],
    ) -> None:
        self._lock = threading.Lock()
        self._call: Any = None
        self._attempt = 0
        self._received = False
        self._finished = False
        self._closed = False
        self.request_id = ""
        self.first_response_at: float | None = None
        self._client = client
        self._payload = encode_messages(messages)
        self._stream = stream
        self._sampling = dict(sampling)
        self._deadline = Deadline(client._timeout(timeout_s))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            call, self._call = self._call, None
        if call is not None and not self._finished:
            call.cancel()

    def __next__(self) -> str:
        while not self._finished:
            if self._call is None:
                self._start()
            try:
                response = next(self._call)
            except StopIteration:
                self._finished = True
                raise UnavailableError("the server ended the stream before the final response",
                                       request_id=self.request_id) from None
            except grpc.RpcError as exc:
                error = error_from_rpc(exc, self.request_id)
                if self._closed and isinstance(error, CancelledError):
                    self._finished = True
                    raise CancelledError("stream closed before the answer ended", request_id=self.request_id) from None
                delay = retry_delay(error, self._received, self._attempt, self._client.config, self._deadline)
                if delay is None:
                    self._finished = True
                    raise error from None
                self._attempt += 1
                self._call = None
                self._client._wait_for_channel(delay)
                continue
            if not self._received:
                self._received = True
                self.first_response_at = time.monotonic()
            try:
                text, final = parse_response(response, self.request_id)
            except Exception:
                self._drain()
                raise
            if final:
                self._drain()
            if text:
                return text
        raise StopIteration

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                self._finished = True
                raise CancelledError("stream closed before the answer ended", request_id=self.request_id or None)
            remaining = self._deadline.remaining()
            if remaining is not None and remaining <= 0:
                self._finished = True
                raise DeadlineExceededError("deadline passed before the request could be sent")
            self.request_id = new_request_id()
            request = build_request(self._client.config.model, self._payload, self._stream, self._sampling,
                                    self.request_id)
            self._call = self._client._open(request, remaining)

    def _drain(self) -> None:
        """Read the RPC's end after the final response, so closing later cancels nothing."""
        self._finished = True
        call = self._call
        if call is None:
            return
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass
