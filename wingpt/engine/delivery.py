"""Work the step thread must not wait for: calling requests' callbacks (sending responses) and polling
each request's `is_cancelled` (in Triton a blocking round trip to the server per call)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from wingpt.engine.faults import RequestFailed
from wingpt.engine.requests import FINISH_CANCELLED, GenerationRequest

log = logging.getLogger(__name__)


class Delivery:
    """Runs requests' callbacks in order on one thread, merging what queued up while it was busy (coalesce).
    A callback that raises is its request's fault (faults.py): that request ends alone with RequestFailed,
    later deliveries for it are dropped, and `on_failure(request_id)` lets the engine drop its sequence."""

    def __init__(self, on_failure: Callable[[str], None]) -> None:
        # Items are lists of (request, args): one step's tokens travel together, one wake-up per step.
        self._queue: queue.SimpleQueue[list[tuple[GenerationRequest, tuple]] | None] = queue.SimpleQueue()
        self._on_failure = on_failure
        # Requests whose callback raised, by id(); holding them keeps their id from being reused (they are few).
        self._failed: dict[int, GenerationRequest] = {}
        self._thread = threading.Thread(target=self._run, name="engine-delivery", daemon=True)
        self._thread.start()

    def tokens(self, request: GenerationRequest, new: list[int], finish: str | None) -> None:
        self._queue.put([(request, (new, finish))])

    def step_tokens(self, items: list[tuple[GenerationRequest, list[int], str | None]]) -> None:
        if items:
            self._queue.put([(request, (new, finish)) for request, new, finish in items])

    def error(self, request: GenerationRequest, exc: Exception) -> None:
        self._queue.put([(request, (exc,))])

    def close(self, timeout: float) -> None:
        """Deliver what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (items := self._queue.get()) is not None:
            # Whatever else is queued already goes too: a thread that fell behind the steps (each send is a
            # round trip to the server) catches up with one callback per request instead of one per step.
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items += more
            for request, args in coalesce(items):
                self._deliver(request, args)
            if stop:
                return

    def _deliver(self, request: GenerationRequest, args: tuple) -> None:
        if id(request) in self._failed:
            return
        try:
            if len(args) == 1:
                request.on_error(args[0])
            else:
                request.on_tokens(*args)
        except Exception as exc:
            log.error("a callback of request %s raised %s: ending that request", request.request_id,
                      type(exc).__name__)
            self._failed[id(request)] = request
            self._on_failure(request.request_id)
            if len(args) != 1:
                try:
                    request.on_error(RequestFailed(f"{type(exc).__name__}: {exc}"))
                except Exception:
                    log.exception("the error callback of request %s raised too", request.request_id)


def coalesce(items: list[tuple[GenerationRequest, tuple]]) -> list[tuple[GenerationRequest, tuple]]:
    """One request's successive token deliveries merged into one (its tokens in order, the last finish
    reason); errors and cancellations stay deliveries of their own, in their place."""
    out: list[tuple[GenerationRequest, tuple]] = []
    open_at: dict[int, int] = {}  # id(request) -> index in `out` of its delivery that later tokens join
    for request, args in items:
        key = id(request)
        mergeable = len(args) == 2 and args[1] != FINISH_CANCELLED
        if mergeable and key in open_at:
            index = open_at[key]
            tokens, _ = out[index][1]
            out[index] = (request, (tokens + args[0], args[1]))
        else:
            out.append((request, args))
            open_at[key] = len(out) - 1
        if not mergeable or args[1] is not None:
            open_at.pop(key, None)  # ended: nothing joins it
    return out


class CancellationPoller:
    """Every `period_s`, asks each live request whether its client went away and cancels it if so."""

    def __init__(self, live: Callable[[], list[tuple[str, Callable[[], bool]]]], cancel: Callable[[str], None],
                 period_s: float = 0.1) -> None:
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
