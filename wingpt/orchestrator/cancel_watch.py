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
        """Stop watching `key`. Once this returns no check of it is running or will start: call it
        before a request's final response, after which Triton 2.51 frees the response factory that
        `is_cancelled()` reads (a check after that crashes the server)."""
        with self._lock:
            self._live.pop(key, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.period_s + 1)

    def poll(self) -> None:
        """One pass over the live requests (the thread's loop body). Each check runs under the lock,
        so `forget()` waits for a check in progress."""
        with self._lock:
            keys = list(self._live)
        for key in keys:
            with self._lock:
                entry = self._live.get(key)
                if entry is None:
                    continue  # finished meanwhile
                try:
                    cancelled = entry[0]()
                except Exception:  # transient: a live request is never cancelled on a failed check
                    log.debug("cancellation check failed for %s", key, exc_info=True)
                    cancelled = False
                if cancelled:
                    del self._live[key]
            if cancelled:
                try:
                    entry[1]()
                except Exception:
                    log.exception("cancelling %s failed", key)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()
