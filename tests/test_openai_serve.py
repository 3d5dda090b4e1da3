"""`python -m serving serve` (what `make serve` runs) also serves the OpenAI-compatible endpoint: supervised
beside tritonserver, overload answered 429 with Retry-After, restarted when it dies, stopped on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from serving.launch import child_pids, free_port
from tests.reliability_servers import OwnServer, start_own_server, wait_until

pytestmark = pytest.mark.server

QUESTION = "宝宝15个月37.3度算发烧吗？"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[OwnServer, int]]:
    port = free_port()
    server = start_own_server("openai-serve", WINGPT_OPENAI="1", WINGPT_OPENAI_PORT=str(port))
    try:
        # The supervisor starts the endpoint once Triton is ready, and prints its ready line after both.
        assert wait_until(lambda: "ready: gRPC" in server.log_text(), 120), server.log_text()
        yield server, port
    finally:
        server.stop()


def endpoint_pid(server: OwnServer) -> int | None:
    for pid in child_pids(server.process.pid):
        with contextlib.suppress(OSError):
            if b"openai_api" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


def live(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def test_serve_answers_on_the_openai_port(served):
    server, port = served
    assert live(port)
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    answer = sdk.chat.completions.create(model="wingpt2", messages=[{"role": "user", "content": QUESTION}],
                                         max_tokens=4)
    assert answer.choices[0].message.content
    assert f"OpenAI http://127.0.0.1:{port}/v1" in server.log_text()


def test_a_flood_beyond_batch_and_queue_is_429_with_retry_after_and_the_rest_is_served(served):
    _server, port = served

    async def flood() -> list[object]:
        async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                                      max_retries=0) as aio:
            async def one() -> object:
                try:
                    stream = await aio.chat.completions.create(
                        model="wingpt2", messages=[{"role": "user", "content": QUESTION}], max_tokens=64,
                        stream=True, extra_body={"ignore_eos": True})
                    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
                except openai.APIStatusError as exc:
                    return exc
            return await asyncio.gather(*(one() for _ in range(30)))

    results = asyncio.run(flood())
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    answered = [r for r in results if isinstance(r, str)]
    assert refused, "4 running + 8 waiting: the rest is refused at once"
    assert {r.status_code for r in refused} == {429}
    assert all(r.response.headers["retry-after"] == "2" and r.body["code"] == "server_overloaded" for r in refused)
    assert answered and all(answered), "what was admitted is answered in full"


def test_the_supervisor_restarts_a_dead_endpoint(served):
    server, port = served
    pid = endpoint_pid(server)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: endpoint_pid(server) not in (None, pid) and live(port), 90), server.log_text()
    assert "supervisor: restarting the OpenAI-compatible endpoint" in server.log_text()


def test_sigterm_stops_the_endpoint_with_the_server(served):
    server, port = served
    pid = endpoint_pid(server)
    assert server.stop() == 0
    assert not live(port)
    assert pid is not None and not Path(f"/proc/{pid}").exists()
