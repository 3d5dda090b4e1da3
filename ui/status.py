"""The status line: is Triton reachable, what model does it serve, is it the embedded smoke-test model.

One check per UI process per interval, shared by every open page: with hundreds of patients on the
page, each page's timer reads the cached result instead of sending its own health RPCs. Checks have
a short deadline, so a down server shows as down within seconds instead of hanging the page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from wingpt_client import AsyncWingptClient, ModelInfo, WingptClientError

from ui import text

log = logging.getLogger("ui.status")

CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ServerStatus:
    """One health check's result; `info` is None unless the model is ready."""

    url: str
    model: str
    reachable: bool
    info: ModelInfo | None = None

    @property
    def disclaimer(self) -> str:
        """The server's disclaimer (empty when unknown or not configured)."""
        return self.info.disclaimer if self.info is not None else ""

    def line(self) -> str:
        """The status line in Chinese (Markdown)."""
        if self.info is not None:
            ok = text.STATUS_OK.format(url=self.url, model=self.info.name, version=self.info.server_version)
            return f"{ok} · {text.STATUS_EMBEDDED if self.info.embedded_default else text.STATUS_REAL_MODEL}"
        if self.reachable:
            return f"**{text.STATUS_NOT_READY.format(url=self.url, model=self.model)}**"
        return f"**{text.STATUS_DOWN.format(url=self.url)}**"


class StatusMonitor:
    """Caches the latest `ServerStatus` for `interval_s`; `invalidate()` makes the next read check again
    (the chat calls it when a request finds the server gone, so the line turns red at once)."""

    def __init__(self, client: AsyncWingptClient, interval_s: float) -> None:
        self._client = client
        self._interval_s = interval_s
        self._lock = asyncio.Lock()
        self._status: ServerStatus | None = None
        self._checked_at = 0.0

    def invalidate(self) -> None:
        self._checked_at = 0.0

    async def current(self) -> ServerStatus:
        async with self._lock:
            if self._status is None or time.monotonic() - self._checked_at >= self._interval_s:
                status = await self._check()
                if self._status is None or status.reachable != self._status.reachable:
                    log.info("triton %s: %s", status.url, "reachable" if status.reachable else "unreachable")
                self._status, self._checked_at = status, time.monotonic()
            return self._status

    async def _check(self) -> ServerStatus:
        config = self._client.config
        down = ServerStatus(url=config.url, model=config.model, reachable=False)
        try:
            health = await self._client.health(timeout_s=CHECK_TIMEOUT_S)
        except WingptClientError:
            return down
        if not health.ok:
            return ServerStatus(url=config.url, model=config.model, reachable=health.live)
        try:
            info = await self._client.model_info(timeout_s=CHECK_TIMEOUT_S)
        except WingptClientError:
            return down
        return ServerStatus(url=config.url, model=config.model, reachable=True, info=info)
