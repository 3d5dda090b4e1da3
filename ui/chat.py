"""One patient's conversation: what is sent to Triton, what the page shows, and how an answer streams.

The conversation is kept as `Exchange`s (question, answer, urgent-care notice, error) rather than
as the chat widget's messages, so the notice and error lines the page shows never reach the model
as if the assistant had said them: the model sees only the questions and its own answers.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from wingpt_client import (
    AsyncWingptClient,
    CancelledError,
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    Triage,
    UnavailableError,
    WingptClientError,
)

from ui import text
from ui.status import StatusMonitor

log = logging.getLogger("ui.chat")


@dataclass(frozen=True)
class Exchange:
    """One question and what came back. `answer` may be partial (stopped, or the connection dropped)."""

    question: str
    answer: str = ""
    notice: str = ""
    error: str = ""


@dataclass(frozen=True)
class Sampling:
    """The settings panel's values, sent with every request."""

    max_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float


@dataclass(frozen=True)
class ChatView:
    """What one step of an answer shows: the chat widget's messages, the urgent-care banner (HTML, empty
    when the latest answer is not flagged) and the conversation to keep."""

    messages: list[dict[str, str]]
    banner: str
    conversation: list[Exchange]


def model_messages(conversation: list[Exchange]) -> list[dict[str, str]]:
    """The questions the server took in, with the answers it gave (partial ones too: the patient saw them).

    A question that got nothing back (server down, stopped before the first word) is left out: the patient
    asks it again, and the model should not see it twice. One that got only an urgent-care notice (a
    hospital may stop generation for emergencies) stays, since what follows is about that emergency.
    """
    turns: list[dict[str, str]] = []
    for exchange in conversation:
        if not (exchange.answer or exchange.notice):
            continue
        turns.append({"role": "user", "content": exchange.question})
        if exchange.answer:
            turns.append({"role": "assistant", "content": exchange.answer})
    return turns


def displayed_answer(exchange: Exchange) -> str:
    """The assistant bubble (plain text): the urgent-care notice first, then the answer, then any error."""
    parts = []
    if exchange.notice:
        parts.append(f"🚨 {text.URGENT_TITLE}：{exchange.notice}")
    if exchange.answer:
        parts.append(exchange.answer)
    if exchange.error:
        parts.append(exchange.error)
    return "\n\n".join(parts) or text.GENERATING


def banner_html(notice: str) -> str:
    if not notice:
        return ""
    return (f'<div class="urgent-notice" role="alert"><strong>🚨 {text.URGENT_TITLE}</strong>'
            f"<p>{html.escape(notice)}</p></div>")


def view(conversation: list[Exchange]) -> ChatView:
    messages: list[dict[str, str]] = []
    for exchange in conversation:
        messages.append({"role": "user", "content": exchange.question})
        messages.append({"role": "assistant", "content": displayed_answer(exchange)})
    notice = conversation[-1].notice if conversation else ""
    return ChatView(messages, banner_html(notice), conversation)


def error_text(error: WingptClientError) -> str:
    if isinstance(error, CancelledError):
        return text.STOPPED
    if isinstance(error, UnavailableError):
        return text.ERROR_UNAVAILABLE
    if isinstance(error, OverloadedError):
        return text.ERROR_OVERLOADED
    if isinstance(error, DeadlineExceededError):
        return text.ERROR_DEADLINE
    if isinstance(error, InvalidRequestError):
        return text.ERROR_INVALID.format(message=error.message)
    return text.ERROR_INTERNAL.format(request_id=error.request_id or "-")


def notice_of(triage: Triage | None) -> str:
    return triage.notice if triage is not None and triage.flagged else ""


async def answer(
    client: AsyncWingptClient, monitor: StatusMonitor, conversation: list[Exchange], question: str,
    sampling: Sampling,
) -> AsyncIterator[ChatView]:
    """Stream the answer to `question`, yielding the page after every delta.

    Cancelling the task that iterates this (the stop button) cancels the request on the server. Logs
    carry the request id, sizes, timings and the outcome only: never the question or the answer.
    """
    exchange = Exchange(question=question)
    history = list(conversation)
    yield view([*history, exchange])
    start = time.monotonic()
    outcome = "ok"
    messages = [*model_messages(history), {"role": "user", "content": question}]
    stream = client.stream_chat(
        messages, max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
        repetition_penalty=sampling.repetition_penalty,
    )
    try:
        async with stream:
            async for delta in stream:
                exchange = replace(exchange, answer=exchange.answer + delta, notice=notice_of(stream.triage))
                yield view([*history, exchange])
        exchange = replace(exchange, notice=notice_of(stream.triage))
    except WingptClientError as exc:
        outcome = type(exc).__name__
        if isinstance(exc, UnavailableError):
            monitor.invalidate()
        exchange = replace(exchange, notice=notice_of(stream.triage), error=error_text(exc))
    except (asyncio.CancelledError, GeneratorExit):  # the stop button; leaving `async with` cancelled the request
        outcome = "stopped"
        raise
    finally:
        ttft = stream.first_response_at - start if stream.first_response_at is not None else None
        log.info("answer request_id=%s outcome=%s turns=%d question_chars=%d answer_chars=%d ttft_s=%s elapsed_s=%.3f",
                 stream.request_id or "-", outcome, len(messages), len(question), len(exchange.answer),
                 f"{ttft:.3f}" if ttft is not None else "-", time.monotonic() - start)
    yield view([*history, exchange])
