"""Finds cancelled requests on a timer, never per token.

Triton 2.51's `is_cancelled()` is a blocking round trip from the Python stub to the server, so calling
it for every token would put that round trip on every token's path (and a non-streamed request has no
tokens to hang the check on). One thread polls every live request each period instead, the way the
tensorrt_llm backend polls every `cancellation_check_period_ms`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class CancelWatch:
    """`watch(key, is_cancelled, on_cancel)` until `forget(key)`; `on_cancel` runs once, on the watch thread."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._live: dict[str, tuple[Callable[[], bool], Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancel-watch", daemon=True)
        self._thread.start()

    def watch(self, key: str, is_cancelled: Callable[[], bool], on_cancel: Callable[[], None]) -> None:
        with self._lock:
            self._live[key] = (is_cancelled, on_cancel)

    def forget(self, key: str) -> None:
        """Stop watching `key` (a check already under way may still finish: the response sender makes
        `is_cancelled()` after the final response safe, wingpt/response_sender.py)."""
        with self._lock:
            self._live.pop(key, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.period_s + 1)

    def poll(self) -> None:
        """One pass over the live requests (the thread's loop body); each check is a round trip to the
        server, made outside the lock so that requests come and go meanwhile."""
        with self._lock:
            entries = list(self._live.items())
        for key, (is_cancelled, on_cancel) in entries:
            try:
                cancelled = is_cancelled()
            except Exception:  # transient: a live request is never cancelled on a failed check
                log.debug("cancellation check failed for %s", key, exc_info=True)
                continue
            with self._lock:
                # Only a request still watched is cancelled (it may have finished during the check), once.
                cancelled = cancelled and self._live.pop(key, None) is not None
            if cancelled:
                try:
                    on_cancel()
                except Exception:
                    log.exception("cancelling %s failed", key)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()
