"""The systems a load test talks to, and how one streamed request is sent to each.

- Triton: the `ensemble` over gRPC through the project's client (`wingpt_client`): `AsyncWingptClient`
  for the asyncio sweep, `WingptClient` for Locust (gevent).
- OpenAI-compatible: `POST {base}/chat/completions` with `"stream": true` (Kimi's API, vLLM,
  trtllm-serve, the seed-style baseline in loadtest/baselines). Standard library only (http.client),
  so it runs on the GPU machine; Locust's gevent patching makes it cooperative there.

Every sender reports text deltas to a `Recorder` and raises `TargetError` (or the client's
`WingptClientError`) on failure; the caller turns either into the record's error.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from wingpt_client import AsyncWingptClient, WingptClient

from loadtest.metrics import Recorder
from loadtest.workloads import Prompt

TARGET_KINDS = ("triton", "openai")


class TargetError(Exception):
    """A request that failed on an OpenAI-compatible endpoint; `kind` groups errors in reports."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def error_text(exc: BaseException) -> str:
    """`Kind: message` for a record; the kind (before the colon) is what reports count."""
    kind = exc.kind if isinstance(exc, TargetError) else type(exc).__name__
    return f"{kind}: {exc}"


@dataclass(frozen=True)
class Generation:
    """What every request asks for. `ignore_eos` asks for exactly `max_tokens` output tokens."""

    max_tokens: int = 256
    temperature: float = 0.0
    ignore_eos: bool = False

    def triton_options(self) -> dict[str, object]:
        """Keyword options for wingpt_client's `stream_chat`; ignoring EOS is `end_id=-1`, as in TensorRT-LLM."""
        options: dict[str, object] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.ignore_eos:
            options["end_id"] = -1
        return options

    def openai_body(self, model: str, messages: list[dict[str, str]]) -> dict[str, object]:
        body: dict[str, object] = {"model": model, "messages": messages, "max_tokens": self.max_tokens,
                                   "temperature": self.temperature, "stream": True}
        if self.ignore_eos:  # vLLM / trtllm-serve / the seed-style baseline extensions
            body.update(ignore_eos=True, min_tokens=self.max_tokens)
        return body


@dataclass(frozen=True)
class OpenAIEndpoint:
    """An OpenAI-compatible base URL (`http://host:port/v1`), model name and API key (from an env var)."""

    base_url: str
    model: str = "wingpt2"
    api_key_env: str = ""
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OpenAI-compatible url must be http(s)://host[:port]/path, got {self.base_url!r}")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ValueError(f"--api-key-env {self.api_key_env}: that environment variable is not set")

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        return headers


def stream_openai(endpoint: OpenAIEndpoint, body: dict[str, object], on_delta: Callable[[str], None]) -> None:
    """POST a streaming chat completion and pass each content delta to `on_delta` as it arrives."""
    parts = urlsplit(endpoint.base_url)
    path = parts.path.rstrip("/") + "/chat/completions"
    connection_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    kwargs = {"context": ssl.create_default_context()} if parts.scheme == "https" else {}
    conn = connection_cls(parts.hostname, parts.port, timeout=endpoint.timeout_s, **kwargs)
    try:
        try:
            conn.request("POST", path, json.dumps(body, ensure_ascii=False).encode("utf-8"), endpoint.headers())
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise TargetError("Unreachable", f"{endpoint.base_url}: {exc}") from None
        if response.status != 200:
            detail = response.read(500).decode("utf-8", errors="replace").strip()
            raise TargetError(f"HTTP {response.status}", detail or response.reason)
        _read_events(response, on_delta)
    finally:
        conn.close()


def _read_events(response: http.client.HTTPResponse, on_delta: Callable[[str], None]) -> None:
    """Server-sent events: `data: {chunk}` lines until `data: [DONE]`."""
    while True:
        try:
            line = response.readline()
        except (OSError, http.client.HTTPException) as exc:
            raise TargetError("StreamError", f"connection lost mid-answer: {exc}") from None
        if not line:
            raise TargetError("StreamError", "stream ended without data: [DONE]")
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            raise TargetError("StreamError", f"not JSON: {payload[:200]!r}") from None
        if "error" in chunk:
            raise TargetError("ServerError", json.dumps(chunk["error"], ensure_ascii=False)[:300])
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                on_delta(text)


def send_triton_sync(client: WingptClient, prompt: Prompt, generation: Generation, recorder: Recorder) -> None:
    """One streamed chat through the sync client (Locust users under gevent)."""
    with client.stream_chat(prompt.as_messages(), **generation.triton_options()) as stream:  # type: ignore[arg-type]
        for delta in stream:
            recorder.delta(delta)


class AsyncTarget:
    """A target for the asyncio sweep: `send` streams one prompt into a recorder."""

    name: str

    async def check(self) -> None:
        """Raise a readable error if the target cannot be reached (before a run starts)."""

    async def send(self, prompt: Prompt, generation: Generation, recorder: Recorder) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections and threads."""


class TritonTarget(AsyncTarget):
    def __init__(self, url: str, timeout_s: float = 600.0, name: str = "triton") -> None:
        self.name = name
        self.url = url
        self._client = AsyncWingptClient(url, timeout_s=timeout_s, retries=0)

    async def check(self) -> None:
        health = await self._client.health(timeout_s=10)
        if not health.ok:
            raise TargetError("Unready", f"Triton at {self.url} is not ready: {health}")

    async def send(self, prompt: Prompt, generation: Generation, recorder: Recorder) -> None:
        async with self._client.stream_chat(prompt.as_messages(), **generation.triton_options()) as stream:  # type: ignore[arg-type]
            async for delta in stream:
                recorder.delta(delta)

    async def aclose(self) -> None:
        await self._client.close()


class OpenAITarget(AsyncTarget):
    """Blocking HTTP streams on a thread pool sized to the concurrency: the standard library has no
    asyncio HTTP client, and one thread per in-flight stream is cheap at these concurrencies."""

    def __init__(self, endpoint: OpenAIEndpoint, max_concurrency: int, name: str = "openai") -> None:
        self.name = name
        self.endpoint = endpoint
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_concurrency), thread_name_prefix="openai")

    async def check(self) -> None:
        probe = Generation(max_tokens=1)
        body = probe.openai_body(self.endpoint.model, [{"role": "user", "content": "你好"}])
        await asyncio.get_running_loop().run_in_executor(self._pool, stream_openai, self.endpoint, body,
                                                         lambda _text: None)

    async def send(self, prompt: Prompt, generation: Generation, recorder: Recorder) -> None:
        body = generation.openai_body(self.endpoint.model, prompt.as_messages())
        await asyncio.get_running_loop().run_in_executor(self._pool, stream_openai, self.endpoint, body,
                                                         recorder.delta)

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
