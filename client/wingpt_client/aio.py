"""asyncio twin of `WingptClient`: same arguments, same errors, one `grpc.aio` channel per client.

For async web backends (FastAPI, aiohttp): thousands of concurrent streams cost one task each
instead of one thread each. Cancelling the task that iterates a stream cancels the request on the
server, so a patient closing the browser tab frees the engine slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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


class AsyncWingptClient(ClientBase):
    """WiNGPT2 chat over Triton gRPC for asyncio. Create it inside the event loop that uses it.

    >>> async with AsyncWingptClient("triton:8001") as client:
    ...     async for delta in client.stream_chat("宝宝15个月37.3度算发烧吗？"):
    ...         print(delta, end="")
    """

    def _connect(self) -> None:
        credentials = self.config.credentials()
        target = self.config.target
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; streams still open on it end with CancelledError."""
        await self._channel.close()

    async def chat(
        self, messages: Messages, *, timeout_s: float | None = None, **sampling: Unpack[SamplingOptions]
    ) -> str:
        """The whole answer. It is streamed underneath and joined: a deadline, a closed client or a
        cancelled call then stops the generation on the server at its next token, which a request for one
        final response cannot (the engine would run it to max_tokens)."""
        async with AsyncChatStream(self, messages, True, timeout_s, sampling) as stream:
            return "".join([delta async for delta in stream])

    def stream_chat(
        self, messages: Messages, *, timeout_s: float | None = None, **sampling: Unpack[SamplingOptions]
    ) -> AsyncChatStream:
        """Text deltas as they are generated; `aclose()` it (or leave its `async with`) to cancel."""
        return AsyncChatStream(self, messages, True, timeout_s, sampling)

    async def health(self, *, timeout_s: float | None = None) -> Health:
        deadline = Deadline(self._timeout(timeout_s))
        live = await self._unary(self._stub.ServerLive, service_pb2.ServerLiveRequest(), deadline)
        ready = await self._unary(self._stub.ServerReady, service_pb2.ServerReadyRequest(), deadline)
        request = service_pb2.ModelReadyRequest(name=self.config.model)
        model = await self._unary(self._stub.ModelReady, request, deadline)
        return Health(live=live.live, ready=ready.ready, model_ready=model.ready)

    async def model_info(self, *, timeout_s: float | None = None) -> ModelInfo:
        deadline = Deadline(self._timeout(timeout_s))
        request = service_pb2.ModelConfigRequest(name=self.config.model)
        config = await self._unary(self._stub.ModelConfig, request, deadline)
        server = await self._unary(self._stub.ServerMetadata, service_pb2.ServerMetadataRequest(), deadline)
        return model_info_from(config.config, server)

    async def _unary(self, method: Any, request: Any, deadline: Deadline) -> Any:
        attempt = 0
        while True:
            try:
                return await method(request, timeout=deadline.remaining(), metadata=self._metadata)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                delay = retry_delay(error, False, attempt, self.config, deadline)
                if delay is None:
                    raise error from None
            attempt += 1
            await self._wait_for_channel(delay)

    async def _wait_for_channel(self, delay_s: float) -> None:
        """Back off for `delay_s`, but go again as soon as the channel reconnects."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._channel.channel_ready(), delay_s)

    def _open(self, request: service_pb2.ModelInferRequest, timeout_s: float | None) -> Any:
        return self._stub.ModelStreamInfer(iter((request,)), timeout=timeout_s, metadata=self._metadata)


class AsyncChatStream(StreamBase, AsyncIterator[str]):
    """Text deltas of one answer; `aclose()`, leaving `async with`, or cancelling the iterating task
    cancels the request on the server."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        self._closed = True
        call, self._call = self._call, None
        if call is not None and not self._finished:
            call.cancel()

    async def __anext__(self) -> str:
        while not self._finished:
            if self._call is None:
                request, remaining = self._next_request()
                self._call = self._client._open(request, remaining)
            try:
                response = await self._call.read()
            except asyncio.CancelledError:
                if self._closed:  # aclose() from another task cancelled the call under us
                    raise self._closed_error() from None
                self._cancel()  # our own task was cancelled: stop the generation too
                raise
            except grpc.RpcError as exc:
                await self._client._wait_for_channel(self._retry_delay_or_raise(exc))
                continue
            if response is grpc.aio.EOF:
                raise self._ended_early()
            try:
                text, final = self._parse(response)
            except Exception:
                await self._drain()
                raise
            if final:
                await self._drain()
            if text:
                return text
        raise StopAsyncIteration

    async def _drain(self) -> None:
        """Read the RPC's end after the final response, so closing later cancels nothing."""
        self._finished = True
        call = self._call
        if call is None:
            return
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.RpcError:
            pass
