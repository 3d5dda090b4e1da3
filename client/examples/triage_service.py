"""A hospital app's backend calling WiNGPT2 through wingpt_client: the smallest honest example.

    pip install ./client fastapi uvicorn
    WINGPT_URL=triton.hospital:8001 uvicorn --app-dir client/examples triage_service:app --port 8080

    curl -s localhost:8080/v1/triage/chat -H 'content-type: application/json' \
         -d '{"messages": [{"role": "user", "content": "宝宝15个月37.3度算发烧吗？"}]}'
    curl -N localhost:8080/v1/triage/stream -H 'content-type: application/json' -d '{"messages": [...]}'

One AsyncWingptClient (one gRPC channel) serves every request of the process. The client's errors
become HTTP statuses the app's frontend already understands: 422 for a request the model server
refused (its message says which field), 503 with Retry-After when overloaded or unreachable, 504 on
the deadline. A patient who closes the page cancels the generation: Starlette cancels the streaming
task, and the client cancels the gRPC request. The server's red-flag triage travels along: a `triage`
object in the JSON answer, and in the stream the `X-Triage-Level` header plus the urgent-care notice
before the answer's first word.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from wingpt_client import (
    AsyncWingptClient,
    ClientConfig,
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    Triage,
    UnavailableError,
    WingptClientError,
)


class Turn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    messages: list[Turn] = Field(min_length=1)
    max_tokens: int | None = None


class TriageFlags(BaseModel):
    level: str
    categories: list[str]
    notice: str


class ChatAnswer(BaseModel):
    answer: str
    triage: TriageFlags | None


def _flags(triage: Triage | None) -> TriageFlags | None:
    return None if triage is None else TriageFlags(level=triage.level, categories=list(triage.categories),
                                                   notice=triage.notice)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.wingpt = AsyncWingptClient.from_config(ClientConfig.from_env())  # WINGPT_URL, WINGPT_TOKEN, ...
    yield
    await app.state.wingpt.close()


app = FastAPI(title="triage chat backend", lifespan=lifespan)


def _http_error(exc: WingptClientError) -> HTTPException:
    if isinstance(exc, InvalidRequestError):
        return HTTPException(422, detail=exc.message)
    if isinstance(exc, OverloadedError | UnavailableError):
        return HTTPException(503, detail="the medical assistant is busy, please retry", headers={"Retry-After": "2"})
    if isinstance(exc, DeadlineExceededError):
        return HTTPException(504, detail="the medical assistant took too long")
    return HTTPException(502, detail="the medical assistant failed")


def _turns(body: ChatRequest) -> list[dict[str, str]]:
    return [t.model_dump() for t in body.messages]


def _sampling(body: ChatRequest) -> dict[str, int]:
    return {} if body.max_tokens is None else {"max_tokens": body.max_tokens}


@app.post("/v1/triage/chat")
async def chat(body: ChatRequest, request: Request) -> ChatAnswer:
    try:
        async with request.app.state.wingpt.stream_chat(_turns(body), **_sampling(body)) as deltas:
            answer = "".join([delta async for delta in deltas])
            return ChatAnswer(answer=answer, triage=_flags(deltas.triage))
    except WingptClientError as exc:
        raise _http_error(exc) from exc


@app.post("/v1/triage/stream")
async def stream(body: ChatRequest, request: Request) -> StreamingResponse:
    deltas = request.app.state.wingpt.stream_chat(_turns(body), **_sampling(body))
    try:
        first = await anext(deltas, "")  # errors before the first token still get a proper status
    except WingptClientError as exc:
        await deltas.aclose()
        raise _http_error(exc) from exc

    triage = deltas.triage
    flagged = triage is not None and triage.flagged

    async def text() -> AsyncIterator[str]:
        async with deltas:
            if flagged:
                yield f"{triage.notice}\n\n"
            yield first
            async for delta in deltas:
                yield delta

    headers = {"X-Triage-Level": triage.level if triage is not None else "unknown"}
    return StreamingResponse(text(), media_type="text/plain; charset=utf-8", headers=headers)


@app.get("/healthz")
async def healthz(request: Request) -> dict[str, bool]:
    try:
        health = await request.app.state.wingpt.health(timeout_s=2)
    except WingptClientError as exc:
        raise HTTPException(503, detail=str(exc)) from exc
    if not health.ok:
        raise HTTPException(503, detail="model not ready")
    return {"ok": True}
