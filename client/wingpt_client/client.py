"""Synchronous client: one gRPC channel, shared by every thread and every concurrent stream.

tritonclient's own sync client holds one stream per client object (and one channel per client),
so N concurrent chats would need N connections. Here each chat is its own `ModelStreamInfer` RPC
on the shared channel: closing it cancels exactly that request on the server, which is what
`stop_stream(cancel_requests=True)` does for a whole tritonclient stream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any, Self, Unpack

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from wingpt_client._base import ClientBase, StreamBase
from wingpt_client._protocol import (
    Deadline,
    Health,
    Messages,
    ModelInfo,
    SamplingOptions,
    model_info_from,
    retry_delay,
)
from wingpt_client.config import CHANNEL_OPTIONS
from wingpt_client.errors import error_from_rpc


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
        """The whole answer. It is streamed underneath and joined: a deadline, a closed client or a
        cancelled call then stops the generation on the server at its next token, which a request for one
        final response cannot (the engine would run it to max_tokens)."""
        with ChatStream(self, messages, True, timeout_s, sampling) as stream:
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


class ChatStream(StreamBase, Iterator[str]):
    """Text deltas of one answer. `close()` (from any thread) cancels the request on the server;
    so does leaving a `with` block early or dropping the last reference."""

    def __init__(
        self, client: WingptClient, messages: Messages, stream: bool, timeout_s: float | None,
        sampling: Mapping[str, object],
    ) -> None:
        self._lock = threading.Lock()
        super().__init__(client, messages, stream, timeout_s, sampling)

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
                raise self._ended_early() from None
            except grpc.RpcError as exc:
                self._client._wait_for_channel(self._retry_delay_or_raise(exc))
                continue
            try:
                text, final = self._parse(response)
            except Exception:
                self._drain()
                raise
            if final:
                self._drain()
            if text:
                return text
        raise StopIteration

    def _start(self) -> None:
        with self._lock:  # close() may run on another thread
            request, remaining = self._next_request()
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
