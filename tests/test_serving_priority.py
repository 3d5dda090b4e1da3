"""Under overload an emergency is never turned away: the orchestrator's triage-aware waiting line.

A server of its own with one engine slot and three waiting places (WINGPT_PRIORITY_LEVELS=emergency).
Orderings are made deterministic, not timed: a request is known to run when its first text arrives, to
wait when the orchestrator's gauge counts it, and the engine is held still while the line is filled (the
test-only `WINGPT_TEST_FAULTS=hold:<file>`: no engine step while the file exists; the process keeps running,
unlike a SIGSTOP, which left Triton waiting on a stopped stub), then let go.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_servers import OwnServer, start_own_server, wait_until
from wingpt_client import OverloadedError, WingptClient, WingptClientError

pytestmark = pytest.mark.server

EMERGENCY = "我爸突然胸口剧痛，满头大汗"
ORDINARY = "宝宝15个月37.3度算发烧吗？"  # triage level none
QUEUE = 3


HOLD = Path(tempfile.gettempdir()) / f"wingpt-priority-hold-{os.getpid()}"


@pytest.fixture(scope="module")
def server() -> Iterator[OwnServer]:
    own = start_own_server("priority", WINGPT_MAX_BATCH_SIZE="1", WINGPT_MAX_QUEUE_SIZE=str(QUEUE),
                           WINGPT_PRIORITY_LEVELS="emergency", WINGPT_TEST_FAULTS=f"hold:{HOLD}")
    yield own
    own.stop()


@pytest.fixture(scope="module")
def client(server: OwnServer) -> Iterator[WingptClient]:
    with WingptClient(server.grpc_url, retries=0) as c:
        yield c


@pytest.fixture
def idle(server: OwnServer) -> OwnServer:
    assert wait_until(lambda: server.engine("active") == 0 and waiting(server) == 0, 60), "server busy"
    return server


def waiting(server: OwnServer, priority: str | None = None) -> float:
    if priority is None:
        return waiting(server, "ordinary") + waiting(server, "emergency")
    return server.metric("wingpt_orchestrator_requests", priority=priority, state="waiting")


class Chat:
    """One streamed chat on a thread of its own; `events` is shared by all chats of a test, in order."""

    def __init__(self, client: WingptClient, name: str, question: str, events: list[tuple[str, str]],
                 max_tokens: int = 24) -> None:
        self.name = name
        self.deltas: list[str] = []
        self.error: BaseException | None = None
        self.stream = client.stream_chat(question, max_tokens=max_tokens, end_id=-1, temperature=0)
        self._events = events
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for delta in self.stream:
                if not self.deltas:
                    self._events.append((self.name, "text"))
                self.deltas.append(delta)
            self._events.append((self.name, "end"))
        except WingptClientError as exc:
            self.error = exc
            self._events.append((self.name, "error"))

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> Chat:
        self._thread.join(timeout=120)
        assert self.done, f"{self.name} did not finish"
        return self


@contextlib.contextmanager
def engine_held() -> Iterator[None]:
    """The engine makes no progress inside the block: its running request keeps its slot."""
    HOLD.touch()
    try:
        yield
    finally:
        HOLD.unlink(missing_ok=True)


def running_chat(client: WingptClient, server: OwnServer, events: list, name: str = "running",
                 question: str = ORDINARY) -> Chat:
    """A chat that holds the engine's one slot (its first text has arrived) for longer than the test needs it."""
    chat = Chat(client, name, question, events, max_tokens=200)
    assert wait_until(lambda: chat.deltas or chat.done, 60) and not chat.done, chat.error
    return chat


def fill_the_line(client: WingptClient, server: OwnServer, events: list) -> list[Chat]:
    """QUEUE ordinary chats, each known to wait (the gauge counts it) before the next is sent."""
    line = []
    for i in range(QUEUE):
        line.append(Chat(client, f"ordinary-{i}", ORDINARY, events))
        assert wait_until(lambda n=i + 1: waiting(server, "ordinary") == n, 60)
    return line


def test_an_emergency_gets_its_notice_and_an_answer_while_the_newest_ordinary_waiting_request_is_shed(
        idle, client):
    events: list[tuple[str, str]] = []
    shed_before = idle.metric("wingpt_orchestrator_shed_total", priority="ordinary")
    first = running_chat(client, idle, events)
    with engine_held():
        line = fill_the_line(client, idle, events)
        emergency = Chat(client, "emergency", EMERGENCY, events, max_tokens=16)
        newest = line[-1]
        assert wait_until(lambda: newest.done, 60), "the newest ordinary waiting request was shed"
        assert isinstance(newest.error, OverloadedError) and "overloaded" in str(newest.error)
        assert newest.deltas == [], "shed before any text"
        assert wait_until(lambda: emergency.stream.triage is not None, 60)
        assert emergency.stream.triage.level == "emergency" and emergency.stream.triage.notice
        assert emergency.deltas == [], "the notice comes while the emergency still waits for the engine"
        assert wait_until(lambda: waiting(idle, "emergency") == 1 and waiting(idle, "ordinary") == QUEUE - 1, 30)
        assert idle.metric("wingpt_orchestrator_shed_total", priority="ordinary") == shed_before + 1
        assert not first.done, "the running stream is never cut"
    for chat in (first, emergency, *line[:-1]):
        chat.join()
        assert chat.error is None and chat.deltas, (chat.name, chat.error)
    texts = [name for name, kind in events if kind == "text"]
    assert texts == ["running", "emergency", "ordinary-0", "ordinary-1"], events


def test_ordinary_requests_are_served_in_arrival_order(idle, client):
    events: list[tuple[str, str]] = []
    first = running_chat(client, idle, events)
    with engine_held():
        line = fill_the_line(client, idle, events)
    for chat in (first, *line):
        chat.join()
        assert chat.error is None and chat.deltas, (chat.name, chat.error)
    assert [name for name, kind in events if kind == "text"] == ["running", *(c.name for c in line)]


def test_a_flood_of_emergencies_alone_is_refused_like_any_overload_and_each_still_gets_its_notice(idle, client):
    """With the line full of emergencies an emergency has nobody to shed: it is refused before any text,
    as every request is under overload, but the notice (call 120) needs no engine and comes first."""
    events: list[tuple[str, str]] = []
    refused_before = idle.metric("wingpt_orchestrator_refused_total", priority="emergency")
    first = running_chat(client, idle, events, question=EMERGENCY)
    flood = 8
    with engine_held():
        chats = [Chat(client, f"emergency-{i}", EMERGENCY, events, max_tokens=8) for i in range(flood)]
        assert wait_until(lambda: sum(c.done for c in chats) == flood - QUEUE, 60)
        assert wait_until(lambda: waiting(idle, "emergency") == QUEUE, 30)
    for chat in (first, *chats):
        chat.join()
    refused = [c for c in chats if c.error is not None]
    served = [c for c in chats if c.error is None]
    assert len(refused) == flood - QUEUE and len(served) == QUEUE
    assert all(isinstance(c.error, OverloadedError) and c.deltas == [] for c in refused)
    assert all(c.stream.triage is not None and c.stream.triage.level == "emergency" for c in chats)
    assert all(c.deltas for c in (first, *served))
    assert wait_until(lambda: idle.metric("wingpt_orchestrator_refused_total", priority="emergency")
                      == refused_before + flood - QUEUE, 30)
    with WingptClient(idle.grpc_url) as c:
        assert c.chat(ORDINARY, max_tokens=4)
