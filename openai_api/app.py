"""The FastAPI application: /v1/chat/completions (SSE and one-shot), /v1/models, health endpoints.

One `AsyncWingptClient` (one gRPC channel to Triton) serves every request of the process. An answer is
read from Triton as a stream in both modes, so a client that disconnects, or a deadline, stops the
generation on the server at its next token. Errors before the first token get their own HTTP status;
after it, the SSE stream carries OpenAI's error object and ends.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send
from wingpt_client import AsyncChatStream, AsyncWingptClient, Triage, WingptClientError

from openai_api.answer import Answer, TokenCounter
from openai_api.auth import KeyFile
from openai_api.errors import OpenAIError, from_client_error, model_not_found, unauthorized
from openai_api.protocol import ChatCompletionRequest, model_entry
from openai_api.settings import OpenAISettings
from wingpt.tokenizer import load_tokenizer

LOG = logging.getLogger("openai_api")
TRIAGE_HEADER = "X-Triage-Level"


def build_app(settings: OpenAISettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.triton = AsyncWingptClient.from_config(settings.client)
        try:
            yield
        finally:
            await app.state.triton.close()

    app = FastAPI(title="WiNGPT2 OpenAI-compatible API", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.keys = KeyFile(settings.api_keys_file) if settings.api_keys_file else None
    app.state.counter = TokenCounter(load_tokenizer(settings.tokenizer_dir or None), settings.context_window,
                                     settings.system_prompt)
    app.state.started = int(time.time())
    _install_error_handlers(app)
    app.include_router(_routes(), dependencies=[])
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(_request: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        param = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".") or None
        if error.get("type") == "json_invalid":
            param, message = None, "the request body is not valid JSON"
        else:
            message = str(error.get("msg", "invalid value"))
        return await openai_error(_request, OpenAIError.invalid(param, message))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(OpenAIError(exc.status_code, str(exc.detail), kind).body(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


def _authorized(request: Request) -> None:
    keys: KeyFile | None = request.app.state.keys
    if keys is not None and not keys.check(request.headers.get("authorization")):
        raise unauthorized()


def _routes():
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        """The process serves HTTP (Kubernetes liveness: restart only when this fails)."""
        return {"status": "ok"}

    @router.get("/health/ready")
    async def ready(request: Request) -> JSONResponse:
        """Triton live, ready and its chat model loaded (Kubernetes readiness: no traffic otherwise)."""
        try:
            health = await request.app.state.triton.health(timeout_s=2)
        except WingptClientError as exc:
            return JSONResponse({"status": "unavailable", "reason": exc.code}, status_code=503)
        body = {"status": "ok" if health.ok else "unready", "live": health.live, "ready": health.ready,
                "model_ready": health.model_ready}
        return JSONResponse(body, status_code=200 if health.ok else 503)

    @router.get("/v1/models", dependencies=[Depends(_authorized)])
    async def models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [await _model(request)]}

    @router.get("/v1/models/{model_id}", dependencies=[Depends(_authorized)])
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        settings: OpenAISettings = request.app.state.settings
        if model_id != settings.model_name:
            raise model_not_found(model_id, settings.model_name)
        return await _model(request)

    @router.post("/v1/chat/completions", dependencies=[Depends(_authorized)])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await _chat(body, request)

    return router


async def _model(request: Request) -> dict[str, Any]:
    settings: OpenAISettings = request.app.state.settings
    try:
        info = await request.app.state.triton.model_info(timeout_s=5)
    except WingptClientError as exc:
        raise from_client_error(exc, settings.retry_after_s) from None
    metadata = {"disclaimer": info.disclaimer, "embedded_default": info.embedded_default, "note": info.note,
                "triton_model": info.name, "triton_version": info.server_version}
    return model_entry(settings.model_name, request.app.state.started, {"metadata": metadata})


async def _chat(body: ChatCompletionRequest, request: Request):
    settings: OpenAISettings = request.app.state.settings
    body.check_supported()
    if body.model != settings.model_name:
        raise model_not_found(body.model, settings.model_name)
    turns = body.turns()
    sampling = body.sampling(settings.max_tokens_default)
    answer = Answer(request.app.state.counter, int(sampling["max_tokens"]), body.stops)
    stream: AsyncChatStream = request.app.state.triton.stream_chat(turns, **sampling)
    try:
        first = await anext(stream, None)  # errors before the first token still get a proper status
    except WingptClientError as exc:
        await stream.aclose()
        _log(stream.request_id, body.stream, answer, None, f"error:{exc.code}")
        raise from_client_error(exc, settings.retry_after_s) from None
    except BaseException:
        await stream.aclose()
        raise
    triage = stream.triage
    notice = f"{triage.notice}\n\n" if settings.triage_notice and triage is not None and triage.flagged else ""
    headers = {TRIAGE_HEADER: triage.level if triage is not None else "none"}
    meta = _Meta(stream.request_id, settings.model_name, int(time.time()), turns, triage)
    if body.stream:
        events = _events(stream, first, answer, notice, meta, body.include_usage, request, settings)
        return _SSE(events, on_close=stream.aclose, headers={**headers, "Cache-Control": "no-cache",
                                                             "X-Accel-Buffering": "no"})
    async with stream:
        text = [notice, answer.feed(first)] if first is not None else [notice]
        try:
            text += [answer.feed(delta) async for delta in stream]
        except WingptClientError as exc:
            _log(meta.id, False, answer, triage, f"error:{exc.code}")
            raise from_client_error(exc, settings.retry_after_s) from None
    text.append(answer.finish())
    completion = ChatCompletion(
        id=meta.completion_id, object="chat.completion", created=meta.created, model=meta.model,
        choices=[{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                  "finish_reason": answer.finish_reason, "logprobs": None}],
        usage=_usage(request, meta, answer), triage=_triage(triage),
    )
    _log(meta.id, False, answer, triage, answer.finish_reason)
    return JSONResponse(completion.model_dump(mode="json", exclude_unset=True), headers=headers)


class _Meta:
    def __init__(self, request_id: str, model: str, created: int, turns: list[dict[str, str]],
                 triage: Triage | None) -> None:
        self.id, self.model, self.created, self.turns, self.triage = request_id, model, created, turns, triage

    @property
    def completion_id(self) -> str:
        return f"chatcmpl-{self.id}"  # Triton's request id: the same id appears in the server's log line


def _usage(request: Request, meta: _Meta, answer: Answer) -> CompletionUsage:
    prompt = request.app.state.counter.prompt_tokens(meta.turns, answer.max_tokens)
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=answer.completion_tokens,
                           total_tokens=prompt + answer.completion_tokens)


def _triage(triage: Triage | None) -> dict[str, Any] | None:
    if triage is None:
        return None
    return {"level": triage.level, "categories": list(triage.categories), "notice": triage.notice}


async def _events(stream: AsyncChatStream, first: str | None, answer: Answer, notice: str, meta: _Meta,
                  include_usage: bool, request: Request, settings: OpenAISettings) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = ChatCompletionChunk(id=meta.completion_id, object="chat.completion.chunk", created=meta.created,
                                   model=meta.model, choices=[{"index": 0, "delta": delta, "finish_reason": finish}],
                                   **extra)
        return _sse(body.model_dump(mode="json", exclude_unset=True))

    yield chunk({"role": "assistant", "content": ""}, triage=_triage(meta.triage))
    if notice:
        yield chunk({"content": notice})
    try:
        if first is not None and (text := answer.feed(first)):
            yield chunk({"content": text})
        async for delta in stream:
            if text := answer.feed(delta):
                yield chunk({"content": text})
    except WingptClientError as exc:
        _log(meta.id, True, answer, meta.triage, f"error:{exc.code}")
        yield _sse(from_client_error(exc, settings.retry_after_s).body())
        return
    if tail := answer.finish():
        yield chunk({"content": tail})
    yield chunk({}, answer.finish_reason)
    if include_usage:
        usage = _usage(request, meta, answer)
        yield _sse(ChatCompletionChunk(id=meta.completion_id, object="chat.completion.chunk", created=meta.created,
                                       model=meta.model, choices=[], usage=usage).model_dump(mode="json",
                                                                                              exclude_unset=True))
    _log(meta.id, True, answer, meta.triage, answer.finish_reason)
    yield b"data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> bytes:
    return format_sse_event(data_str=json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


class _SSE(EventSourceResponse):
    """Server-sent events whose Triton stream is closed however the response ends: a client that
    disconnects makes Starlette cancel the body, and closing the stream cancels the generation."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]],
                 headers: dict[str, str]) -> None:
        super().__init__(content, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


def _log(request_id: str, streamed: bool, answer: Answer, triage: Triage | None, outcome: str) -> None:
    """One metadata line per answer; never the patient's text."""
    LOG.info("chat %s: stream=%s completion_tokens=%d max_tokens=%d triage=%s finish=%s", request_id,
             str(streamed).lower(), answer.completion_tokens, answer.max_tokens,
             triage.level if triage is not None else "-", outcome)
