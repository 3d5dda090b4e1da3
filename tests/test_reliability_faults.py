"""Overload, vanished clients, deadlines, engine death and SIGTERM, against a server of its own.

One supervised server (`python -m serving serve`, as `make serve` runs it: batch 4, queue 8) serves
the whole module; the tests run in file order and the last one stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from reliability_servers import OwnServer, start_own_server, wait_until
from wingpt_client import (
    AsyncWingptClient,
    DeadlineExceededError,
    OverloadedError,
    UnavailableError,
    WingptClient,
    WingptClientError,
)

pytestmark = pytest.mark.server

QUESTION = "孩子发烧39度，精神不好，需要马上去医院吗？"
LONG = 250  # tokens: far longer than any test waits for, so an answer that stops was stopped


@pytest.fixture(scope="module")
def server() -> Iterator[OwnServer]:
    own = start_own_server("reliability-faults")
    yield own
    own.stop()


@pytest.fixture
def idle(server: OwnServer) -> OwnServer:
    assert wait_until(lambda: server.engine("active") == 0 and server.engine("waiting") == 0, 60), "engine busy"
    return server


def test_a_flood_beyond_batch_and_queue_is_refused_at_once_and_memory_stays_bounded(idle):
    """40 streams at once against 4 running + 8 waiting: the rest are refused before any text,
    with the overloaded error; the server's memory does not grow with the flood; it keeps serving."""
    rss_before = idle.rss_kib()

    async def one(ac: AsyncWingptClient, i: int) -> tuple[int, BaseException | None]:
        received = 0
        try:
            async for _ in ac.stream_chat(f"{QUESTION} {i}", max_tokens=16):
                received += 1
        except WingptClientError as exc:
            return received, exc
        return received, None

    async def flood() -> list[tuple[int, BaseException | None]]:
        async with AsyncWingptClient(idle.grpc_url, retries=0) as ac:
            return await asyncio.gather(*(one(ac, i) for i in range(40)))

    for _ in range(3):  # three waves: memory must not ratchet up with each
        results = asyncio.run(flood())
    refused = [(n, e) for n, e in results if isinstance(e, OverloadedError)]
    served = [(n, e) for n, e in results if e is None]
    assert refused and served, results
    assert len(refused) + len(served) == len(results), [e for _, e in results]
    assert all(n == 0 for n, _ in refused), "refused before any text"
    assert "overloaded" in str(refused[0][1])
    assert idle.rss_kib() - rss_before < 300 * 1024, (rss_before, idle.rss_kib())
    with WingptClient(idle.grpc_url) as c:
        assert c.chat(QUESTION, max_tokens=4)


def test_a_client_process_killed_mid_stream_frees_its_engine_slot(idle):
    cancelled = idle.engine("cancelled")
    script = textwrap.dedent(f"""
        import sys, time
        from wingpt_client import WingptClient
        with WingptClient({idle.grpc_url!r}) as c:
            for delta in c.stream_chat({QUESTION!r}, max_tokens={LONG}):
                print("streaming", flush=True)
                time.sleep(60)
    """)
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "streaming"
        assert wait_until(lambda: idle.engine("active") == 1, 10)  # the gauge is published every 0.2 s
        os.kill(client.pid, signal.SIGKILL)
    finally:
        client.kill()
        client.wait()
    assert wait_until(lambda: idle.engine("active") == 0, 30)
    assert idle.engine("cancelled") == cancelled + 1, "stopped, not run on to max_tokens"


def test_a_deadline_stops_the_generation_on_the_server_too(idle):
    cancelled = idle.engine("cancelled")
    with WingptClient(idle.grpc_url, retries=0) as c, pytest.raises(DeadlineExceededError):
        for _ in c.stream_chat(QUESTION, max_tokens=LONG, timeout_s=0.5):
            pass
    assert wait_until(lambda: idle.engine("active") == 0, 30)
    assert idle.engine("cancelled") == cancelled + 1


def test_engine_process_death_fails_in_flight_streams_and_the_engine_comes_back(idle):
    (stub,) = idle.engine_stub_pids()
    server_pid = idle.server_pid()
    with WingptClient(idle.grpc_url, retries=0) as c:
        stream = c.stream_chat(QUESTION, max_tokens=LONG)
        assert next(stream)
        os.kill(stub, signal.SIGKILL)
        with pytest.raises(UnavailableError):
            list(stream)
    assert wait_until(lambda: idle.server_pid() not in (None, server_pid), 60), "supervisor restarted tritonserver"
    idle.wait_ready()
    with WingptClient(idle.grpc_url, retries=5) as c:
        assert wait_until(lambda: c.health().ok, 120)
        assert c.chat(QUESTION, max_tokens=4)
        assert "".join(c.stream_chat(QUESTION, max_tokens=4))
    assert idle.engine_stub_pids() not in ([], [stub])
    supervisor = [line for line in idle.log_text().splitlines() if line.startswith("supervisor:")]
    assert any("restarting tritonserver" in line for line in supervisor), supervisor


def test_sigterm_drains_in_flight_streams_before_exit(idle):
    """A stream cancelled earlier does not hold up shutdown; one still running finishes its answer."""
    with WingptClient(idle.grpc_url, retries=0) as c:
        with c.stream_chat(QUESTION, max_tokens=LONG) as cancelled:
            next(cancelled)
        stream = c.stream_chat(QUESTION, max_tokens=40, temperature=0)
        deltas = [next(stream)]
        idle.process.send_signal(signal.SIGTERM)
        deltas.extend(stream)  # no error: the answer ends normally
    with WingptClient(idle.grpc_url, retries=0) as c:
        assert c.chat(QUESTION, max_tokens=4, temperature=0) + "".join(deltas)
    assert idle.process.wait(timeout=60) == 0
    log = idle.log_text()
    assert "supervisor: SIGTERM; letting the engine finish its requests" in log
    assert "Exit timeout expired" not in log
