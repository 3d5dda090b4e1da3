"""What the sync and asyncio clients share: constructor, configuration, default deadline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from wingpt_client.config import (
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TOKEN_KEY,
    DEFAULT_URL,
    ClientConfig,
    PemSource,
)


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
