"""Triage-aware admission: who holds an engine slot, who waits, who is turned away.

The orchestrator owns the waiting line, not the engine: the pinned TensorRT-LLM release's `tensorrt_llm`
model has no request-priority input (build_engine/pins.py), and the orchestrator knows each request's
triage before it calls the engine, so one line here orders both engines the same way.

- At most `slots` requests (the engine's max_batch_size) hold an engine slot, i.e. run in the engine.
- At most `queue_size` wait here, priority levels first (in the configured order), FIFO within a level.
- A newcomer that finds the line full is refused at once; a priority newcomer instead sheds the newest
  waiting request of the lowest level below its own (that one has produced no text yet and is answered
  overloaded), and is refused only when everything waiting is at least as urgent as itself.
- `reserved` places of the line are kept for priority requests: an ordinary newcomer is refused once
  fewer than that many places are free.
- Running requests are never touched: a patient mid-answer keeps it.

Pure Python and threads, no Triton: the model's request threads block in `wait()`.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field

OVERLOADED = "server overloaded"
ORDINARY = "ordinary"

# A ticket's states: waiting in the line, then admitted (later left), shed or withdrawn.
WAITING, ADMITTED, LEFT, SHED, WITHDRAWN = "waiting", "admitted", "left", "shed", "withdrawn"
# Threads beyond slots + line: an emergency that arrives when the line is full must still be read and
# triaged (a few milliseconds each) before it can shed anyone.
TRIAGE_HEADROOM = 8


@dataclass(eq=False)
class Ticket:
    """One request's place: `priority` is its label (a level name or ORDINARY), `rank` 0 the most urgent."""

    priority: str
    rank: int
    seq: int
    state: str = WAITING
    _decided: threading.Event = field(default_factory=threading.Event, repr=False)


@dataclass(frozen=True)
class AdmissionStats:
    """Counts by priority label, for the metrics: now running / waiting, and since start shed / refused."""

    running: dict[str, int]
    waiting: dict[str, int]
    shed: dict[str, int]
    refused: dict[str, int]


class Admission:
    def __init__(self, slots: int, queue_size: int, priority_levels: tuple[str, ...] = (), reserved: int = 0) -> None:
        if slots < 1 or queue_size < 1:
            raise ValueError("slots and queue_size must be >= 1")
        if not 0 <= reserved <= queue_size:
            raise ValueError(f"reserved must be between 0 and queue_size ({queue_size}), got {reserved}")
        self.slots = slots
        self.queue_size = queue_size
        self.reserved = reserved
        self.labels = (*priority_levels, ORDINARY)  # by rank
        self._lines: list[deque[Ticket]] = [deque() for _ in self.labels]
        self._running = 0
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._counts = {kind: dict.fromkeys(self.labels, 0) for kind in ("running", "shed", "refused")}

    def priority_of(self, triage_level: str) -> str:
        """The priority label of a triage level: the level itself when it has priority, else ORDINARY."""
        return triage_level if triage_level in self.labels[:-1] else ORDINARY

    def arrive(self, triage_level: str) -> Ticket | None:
        """A request that has been triaged asks for a slot: a ticket (ADMITTED at once, or WAITING, to be
        decided by `wait()`), or None when it is refused now. May shed one waiting request."""
        priority = self.priority_of(triage_level)
        rank = self.labels.index(priority)
        with self._lock:
            ticket = Ticket(priority, rank, next(self._seq))
            if self._running < self.slots:  # a free slot means nobody waits
                self._admit(ticket)
                return ticket
            waiting = self._waiting()
            free = self.queue_size - waiting
            if rank == len(self.labels) - 1 and free <= self.reserved:
                self._counts["refused"][priority] += 1
                return None
            if free <= 0 and not self._shed_below(rank):
                self._counts["refused"][priority] += 1
                return None
            self._lines[rank].append(ticket)
            return ticket

    def wait(self, ticket: Ticket, timeout_s: float | None = None) -> str:
        """Block until the ticket is decided (or `timeout_s` passes); its state."""
        ticket._decided.wait(timeout_s)
        return ticket.state

    def withdraw(self, ticket: Ticket) -> bool:
        """The client gave up while waiting: leave the line. False if it was no longer waiting."""
        with self._lock:
            if ticket.state != WAITING:
                return False
            self._lines[ticket.rank].remove(ticket)
            self._decide(ticket, WITHDRAWN)
            return True

    def leave(self, ticket: Ticket) -> None:
        """An admitted request is done: its slot goes to the head of the line."""
        with self._lock:
            if ticket.state != ADMITTED:
                return
            ticket.state = LEFT
            self._running -= 1
            self._counts["running"][ticket.priority] -= 1
            for line in self._lines:
                if line:
                    self._admit(line.popleft())
                    break

    def stats(self) -> AdmissionStats:
        with self._lock:
            return AdmissionStats(
                running=dict(self._counts["running"]),
                waiting={label: len(line) for label, line in zip(self.labels, self._lines, strict=True)},
                shed=dict(self._counts["shed"]),
                refused=dict(self._counts["refused"]),
            )

    # ------------------------------------------------------------------ under the lock
    def _waiting(self) -> int:
        return sum(len(line) for line in self._lines)

    def _admit(self, ticket: Ticket) -> None:
        self._running += 1
        self._counts["running"][ticket.priority] += 1
        self._decide(ticket, ADMITTED)

    def _shed_below(self, rank: int) -> bool:
        """Shed the newest waiting request of the lowest level below `rank`; False if there is none."""
        for lower in range(len(self._lines) - 1, rank, -1):
            if self._lines[lower]:
                victim = self._lines[lower].pop()
                self._counts["shed"][victim.priority] += 1
                self._decide(victim, SHED)
                return True
        return False

    @staticmethod
    def _decide(ticket: Ticket, state: str) -> None:
        ticket.state = state
        ticket._decided.set()


class Intake:
    """Requests that hold one of the orchestrator's threads, from arrival to their last response. Beyond
    `capacity` a request is refused in execute() before it is even read, instead of piling up threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self._held >= self.capacity:
                return False
            self._held += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._held -= 1
