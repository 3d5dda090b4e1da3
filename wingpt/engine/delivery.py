"""Work the step thread must not wait for: calling requests' callbacks (sending responses) and polling
each request's `is_cancelled` (in Triton a blocking round trip to the server per call)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Delivery:
    """Runs callbacks in order on one thread; a callback that raises ends only its own request
    (`on_failure(request_id)`), never the engine."""

    def __init__(self, on_failure: Callable[[str], None]) -> None:
        self._queue: queue.SimpleQueue[tuple[str, Callable, tuple] | None] = queue.SimpleQueue()
        self._on_failure = on_failure
        self._thread = threading.Thread(target=self._run, name="engine-delivery", daemon=True)
        self._thread.start()

    def put(self, request_id: str, callback: Callable, *args: object) -> None:
        self._queue.put((request_id, callback, args))

    def close(self, timeout: float) -> None:
        """Deliver what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            request_id, callback, args = item
            try:
                callback(*args)
            except Exception:
                log.exception("a callback of request %s failed; ending that request", request_id)
                self._on_failure(request_id)


class CancellationPoller:
    """Every `period_s`, asks each live request whether its client went away and cancels it if so."""

    def __init__(self, live: Callable[[], list[tuple[str, Callable[[], bool]]]], cancel: Callable[[str], None],
                 period_s: float = 0.05) -> None:
        self._live, self._cancel, self._period = live, cancel, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-cancel-poll", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            for request_id, is_cancelled in self._live():
                try:
                    cancelled = is_cancelled()
                except Exception:  # the server cannot tell: treat the client as gone
                    log.exception("is_cancelled failed for request %s", request_id)
                    cancelled = True
                if cancelled:
                    self._cancel(request_id)
