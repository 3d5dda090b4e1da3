"""The closed error set, retries, deadlines and cancellation, against the real Triton server.

A small TCP forwarder stands between client and server where a test needs to control the
connection: open it late (the server "comes back"), count connections, or cut it mid-answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from wingpt_client import (
    AsyncWingptClient,
    CancelledError,
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    UnavailableError,
    WingptClient,
    WingptClientError,
)
from wingpt_client.errors import error_from_message

from serving.launch import free_port

pytestmark = pytest.mark.server

QUESTION = "孩子咳嗽三天了，晚上咳得厉害怎么办？"




def _shutdown(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


class TcpForwarder:
    """Forwards 127.0.0.1:<port> to the server; `open()` starts listening, `cut()` drops every connection."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.accepted += 1
                self._sockets += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(src, dst)

    def cut(self) -> None:
        with self._lock:
            _shutdown(*self._sockets)

    def close(self) -> None:
        if self._listener is not None:
            _shutdown(self._listener)  # close() alone leaves a socket blocked in accept() listening on Linux
            self._listener.close()
        self.cut()


@pytest.fixture
def forwarder(triton_server) -> Iterator[TcpForwarder]:
    fwd = TcpForwarder(triton_server.grpc_url)
    yield fwd
    fwd.close()



def metric(metrics_url: str, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    want = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and want <= set(match.group(1).split(",")):
            return float(match.group(2))
    raise KeyError(f"{name}{labels} not in the metrics")


def active(metrics_url: str) -> float:
    return metric(metrics_url, "nv_trt_llm_request_metrics", model="torch_llm", request_type="active")


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def idle_server(triton_server):
    """Generations left running by earlier tests would blur what a test observes on the engine."""
    assert wait_until(lambda: active(triton_server.metrics_url) == 0, 30), "engine still busy"
    return triton_server


def test_every_error_is_a_wingpt_client_error():
    for cls in (InvalidRequestError, OverloadedError, UnavailableError, DeadlineExceededError, CancelledError):
        assert issubclass(cls, WingptClientError)


def test_a_dead_model_process_is_unavailable_so_callers_retry_after_the_restart():
    """Triton's python backend says this when a model's process died (the supervisor restarts the server)."""
    error = error_from_message("in ensemble 'ensemble', Stub process 'torch_llm_0_0' is not healthy.", "id-1")
    assert isinstance(error, UnavailableError) and error.request_id == "id-1"


@pytest.mark.parametrize(
    ("request_kwargs", "server_message"),
    [
        ({"max_tokens": 0}, "max_tokens: must be > 0, got 0"),
        ({"max_tokens": 100_000}, "max_tokens: must be <= 256"),
        ({"top_p": 1.5}, "top_p: must be in (0, 1]"),
    ],
)
def test_invalid_request_carries_the_servers_message(client, request_kwargs, server_message):
    with pytest.raises(InvalidRequestError) as caught:
        client.chat(QUESTION, **request_kwargs)
    assert str(caught.value).startswith(server_message)
    assert "[INVALID_ARGUMENT]" not in str(caught.value) and "in ensemble" not in str(caught.value)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert re.fullmatch(r"[0-9a-f]{32}", caught.value.request_id)


def test_invalid_messages_are_refused_in_streams_and_in_asyncio_too(triton_server, client):
    bad = [{"role": "doctor", "content": "hi"}]
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.role: unknown role 'doctor'"):
        list(client.stream_chat(bad))

    async def ask():
        async with AsyncWingptClient(triton_server.grpc_url) as ac:
            await ac.chat([{"role": "assistant", "content": "hello"}])

    with pytest.raises(InvalidRequestError, match="the last message must have role 'user'"):
        asyncio.run(ask())


def test_overloaded_when_the_engine_queue_is_full(idle_server):
    """The test server takes 4 running + 8 queued requests; more at once are refused at once."""
    async def flood() -> list[object]:
        async with AsyncWingptClient(idle_server.grpc_url) as ac:
            calls = [ac.chat(f"{QUESTION} {i}", max_tokens=24) for i in range(24)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(flood())
    refused = [r for r in results if isinstance(r, OverloadedError)]
    assert refused, results
    assert all(isinstance(r, str) for r in results if r not in refused), results
    assert "max_queue_size" in str(refused[0])


def test_unreachable_server_is_unavailable_after_the_retries(triton_server):
    port = free_port()  # nothing listens there
    with WingptClient(f"127.0.0.1:{port}", retries=2, retry_backoff_s=0.2) as dead:
        start = time.monotonic()
        with pytest.raises(UnavailableError, match="failed to connect"):
            dead.chat(QUESTION)
        assert time.monotonic() - start >= 0.2 * 0.8 + 0.4 * 0.8, "backed off between the three attempts"
        with pytest.raises(UnavailableError):
            dead.health()


def test_a_connection_failure_before_the_first_token_is_retried(forwarder):
    """The server is unreachable for the first 0.6 s (not listening); the retry gets the answer."""
    threading.Timer(0.6, forwarder.open).start()
    with WingptClient(forwarder.url, retries=6, retry_backoff_s=0.1) as c:
        answer = c.chat(QUESTION, max_tokens=6, temperature=0)
    assert answer
    assert forwarder.accepted == 1


def test_many_concurrent_streams_use_one_connection(forwarder, client):
    forwarder.open()
    questions = [f"{QUESTION} {i}" for i in range(8)]

    async def ask_all() -> list[str]:
        async with AsyncWingptClient(forwarder.url) as ac:
            return await asyncio.gather(*(ac.chat(q, max_tokens=4, temperature=0) for q in questions))

    answers = asyncio.run(ask_all())
    with WingptClient(forwarder.url) as sync_client:
        threads = [threading.Thread(target=lambda q=q: sync_client.chat(q, max_tokens=4)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert answers == [client.chat(q, max_tokens=4, temperature=0) for q in questions]
    assert forwarder.accepted == 2, "one TCP connection per client (asyncio + sync), however many streams"


def test_a_connection_lost_after_the_first_token_is_not_retried(idle_server, forwarder):
    """Retrying then would generate the answer twice and splice two texts: the caller gets the error."""
    forwarder.open()
    with WingptClient(forwarder.url, retries=5, retry_backoff_s=0.05) as c:
        stream = c.stream_chat(QUESTION, max_tokens=64)
        received = [next(stream)]
        forwarder.cut()
        with pytest.raises(UnavailableError):
            received.extend(stream)
    assert forwarder.accepted == 1, "no second attempt"


def test_deadline_bounds_the_whole_answer_not_just_the_first_token(idle_server, client):
    """Self-calibrating, so no machine is too fast for it: a fixed-length answer (EOS ignored) is timed
    first, then the same answer gets a third of that time. Its first tokens come after one step, well
    inside the deadline, and the deadline still cuts the answer."""
    start = time.monotonic()
    assert client.chat(QUESTION, max_tokens=256, end_id=-1)
    deadline_s = (time.monotonic() - start) / 3
    deltas: list[str] = []
    with pytest.raises(DeadlineExceededError) as caught:
        for delta in client.stream_chat(QUESTION, max_tokens=256, end_id=-1, timeout_s=deadline_s):
            deltas.append(delta)
    assert deltas, "the first tokens arrived before the deadline, and the deadline still cut the answer"
    assert caught.value.code == "DEADLINE_EXCEEDED"


def test_a_chat_past_its_deadline_stops_generating_on_the_server(idle_server):
    """`chat` streams underneath, so the deadline's cancellation reaches the engine (asyncio and sync)."""
    url = idle_server.metrics_url

    async def ask():
        async with AsyncWingptClient(idle_server.grpc_url, timeout_s=0.3) as ac:
            await ac.chat(QUESTION, max_tokens=200)

    cancelled_before = engine_cancelled(url)
    with pytest.raises(DeadlineExceededError):
        asyncio.run(ask())
    assert wait_until(lambda: engine_cancelled(url) == cancelled_before + 1, 15)
    with WingptClient(idle_server.grpc_url, timeout_s=0.3, retries=0) as sync, pytest.raises(DeadlineExceededError):
        sync.chat(QUESTION, max_tokens=200)
    assert wait_until(lambda: engine_cancelled(url) == cancelled_before + 2, 15)
    assert wait_until(lambda: active(url) == 0, 15)


def engine_cancelled(metrics_url: str) -> float:
    return metric(metrics_url, "nv_trt_llm_request_metrics", model="torch_llm", request_type="cancelled")


def test_closing_a_stream_cancels_the_request_on_the_server(idle_server, client):
    """Triton marks the ensemble cancelled; the engine is told and the request is gone from it."""
    url = idle_server.metrics_url
    cancelled_before = engine_cancelled(url)
    stream = client.stream_chat(QUESTION, max_tokens=200)
    assert next(stream)
    stream.close()
    with pytest.raises(CancelledError):
        next(stream)
    assert wait_until(lambda: engine_cancelled(url) > cancelled_before, 15)
    assert wait_until(lambda: active(url) == 0, 15)


def test_closing_a_stream_stops_generation_in_the_engine(idle_server, client):
    """The orchestrator sees the cancelled request and sends the engine a `stop` under its own engine
    id. A generation that ran on to max_tokens would count as completed, never as cancelled."""
    url = idle_server.metrics_url
    cancelled_before = engine_cancelled(url)
    completed_before = metric(url, "nv_trt_llm_request_metrics", model="torch_llm", request_type="completed")
    with client.stream_chat(QUESTION, max_tokens=200) as stream:
        next(stream)
    assert wait_until(lambda: engine_cancelled(url) > cancelled_before, 15)
    assert wait_until(lambda: active(url) == 0, 15)
    assert metric(url, "nv_trt_llm_request_metrics", model="torch_llm", request_type="completed") == completed_before


def test_close_from_another_thread_ends_the_iteration_with_cancelled(idle_server, client):
    """Closed by another thread mid-answer (joined first, so no machine is fast enough to finish the
    answer before the close): the iteration ends with CancelledError, not with the rest of the text."""
    stream = client.stream_chat(QUESTION, max_tokens=200, end_id=-1)
    received = [next(stream)]
    closer = threading.Thread(target=stream.close)
    closer.start()
    closer.join()
    with pytest.raises(CancelledError, match="closed"):
        received.extend(stream)


def test_cancelling_the_asyncio_task_cancels_the_request(idle_server):
    url = idle_server.metrics_url
    cancelled_before = engine_cancelled(url)

    async def consume_then_cancel() -> None:
        async with AsyncWingptClient(idle_server.grpc_url) as ac:
            first = asyncio.Event()

            async def consume() -> None:
                async for _ in ac.stream_chat(QUESTION, max_tokens=200):
                    first.set()

            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

            stream = ac.stream_chat(QUESTION, max_tokens=200)
            await anext(stream)
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(stream.aclose()))
            with pytest.raises(CancelledError):
                async for _ in stream:
                    pass

    asyncio.run(consume_then_cancel())
    assert wait_until(lambda: engine_cancelled(url) >= cancelled_before + 2, 15)
