"""What the sync and asyncio twins share: the client constructor and the stream state machine."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Self

import grpc
from tritonclient.grpc import service_pb2

from wingpt_client._protocol import (
    Deadline,
    Messages,
    Triage,
    build_request,
    encode_messages,
    new_request_id,
    parse_response,
    retry_delay,
)
from wingpt_client.config import (
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TOKEN_KEY,
    DEFAULT_URL,
    ClientConfig,
    PemSource,
)
from wingpt_client.errors import CancelledError, DeadlineExceededError, UnavailableError, error_from_rpc


class ClientBase:
    """The constructor both twins share: tritonclient's keyword names, validated by ClientConfig;
    the subclass opens its channel (sync or asyncio) in `_connect`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        ssl: bool = False,
        root_certificates: PemSource | None = None,
        private_key: PemSource | None = None,
        certificate_chain: PemSource | None = None,
        token: str | None = None,
        token_key: str = DEFAULT_TOKEN_KEY,
        headers: Mapping[str, str] | None = None,
        model: str = DEFAULT_MODEL,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        retry_backoff_s: float = 0.25,
    ) -> None:
        self.config = ClientConfig(
            url=url, model=model, ssl=ssl, root_certificates=root_certificates, private_key=private_key,
            certificate_chain=certificate_chain, token=token, token_key=token_key, headers=dict(headers or {}),
            timeout_s=timeout_s, retries=retries, retry_backoff_s=retry_backoff_s,
        )
        self._metadata = self.config.metadata()
        self._connect()

    def _connect(self) -> None:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: ClientConfig) -> Self:
        return cls(
            config.url, ssl=config.ssl, root_certificates=config.root_certificates, private_key=config.private_key,
            certificate_chain=config.certificate_chain, token=config.token, token_key=config.token_key,
            headers=config.headers, model=config.model, timeout_s=config.timeout_s, retries=config.retries,
            retry_backoff_s=config.retry_backoff_s,
        )

    def _timeout(self, timeout_s: float | None) -> float | None:
        return self.config.timeout_s if timeout_s is None else timeout_s


class StreamBase:
    """The state machine both stream twins share: one answer, its attempts, its deadline.

    The twins differ only in how they read the RPC (blocking or awaiting); what a request, an error
    or a response means is decided here once.
    """

    def __init__(
        self, client: ClientBase, messages: Messages, stream: bool, timeout_s: float | None,
        sampling: Mapping[str, object],
    ) -> None:
        self._call: Any = None
        self._attempt = 0
        self._received = False
        self._finished = False
        self._closed = False
        self.request_id = ""
        self.first_response_at: float | None = None
        # Set from the server's `triage` response, which comes before the first text delta.
        self.triage: Triage | None = None
        self._client = client
        self._payload = encode_messages(messages)
        self._stream = stream
        self._sampling = dict(sampling)
        self._deadline = Deadline(client._timeout(timeout_s))

    def _closed_error(self) -> CancelledError:
        self._finished = True
        return CancelledError("stream closed before the answer ended", request_id=self.request_id or None)

    def _next_request(self) -> tuple[service_pb2.ModelInferRequest, float | None]:
        """The request of the next attempt, with a fresh id, and the time left for it."""
        if self._closed:
            raise self._closed_error()
        remaining = self._deadline.remaining()
        if remaining is not None and remaining <= 0:
            self._finished = True
            raise DeadlineExceededError("deadline passed before the request could be sent")
        self.request_id = new_request_id()
        request = build_request(self._client.config.model, self._payload, self._stream, self._sampling,
                                self.request_id)
        return request, remaining

    def _retry_delay_or_raise(self, exc: grpc.RpcError) -> float:
        """Seconds to wait before retrying a failed attempt; raises when it must not be retried."""
        error = error_from_rpc(exc, self.request_id)
        if self._closed and isinstance(error, CancelledError):
            raise self._closed_error() from None
        delay = retry_delay(error, self._received, self._attempt, self._client.config, self._deadline)
        if delay is None:
            self._finished = True
            raise error from None
        self._attempt += 1
        self._call = None
        return delay

    def _ended_early(self) -> UnavailableError:
        self._finished = True
        return UnavailableError("the server ended the stream before the final response", request_id=self.request_id)

    def _parse(self, response: service_pb2.ModelStreamInferResponse) -> tuple[str, bool]:
        if not self._received:
            self._received = True
            self.first_response_at = time.monotonic()
        text, final, triage = parse_response(response, self.request_id)
        if triage is not None:
            self.triage = triage
        return text, final
