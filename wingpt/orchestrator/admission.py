"""How many requests the orchestrator holds at once: what the engine can run plus what it may queue.

Beyond that a request is answered overloaded at once, before any work, instead of piling up threads
that would only wait for the engine to refuse them.
"""

from __future__ import annotations

import threading

OVERLOADED = "server overloaded"


class Admission:
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

    @property
    def held(self) -> int:
        with self._lock:
            return self._held
