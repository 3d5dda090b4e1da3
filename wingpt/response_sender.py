"""Triton response senders that several threads of a Python-backend model can share safely.

Both rules below were found as crashes of Triton 2.51 on this project's models:

- `is_cancelled()` on a request whose final response has been sent reads the response factory that
  the final response freed, and the *server* segfaults (in `TRITONBACKEND_ResponseFactoryIsCancelled`).
  A cancellation poller that took its list of live requests a moment before a request finished does
  exactly that. So each sender serialises its own `send` and `is_cancelled`, and once the final
  response has gone `is_cancelled()` answers False without asking the server.
- Many threads making stub calls at once corrupted the stub's heap ("malloc(): unaligned fastbin chunk
  detected", 64 streams against batch 2 + queue 4, `python -m serving.soak`). So every stub call of a
  process (sends, cancellation checks, metric updates, log lines) takes the one `STUB` lock. Each call is
  short; a BLS `exec()` is not one of them (a decoupled `exec()` blocks until the first response).
"""

from __future__ import annotations

import threading
from typing import Any

import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
STUB = threading.Lock()


class SafeSender:
    """A request's response sender: thread-safe, and never asks `is_cancelled` after its final response."""

    def __init__(self, sender: Any) -> None:
        self._sender = sender
        self._lock = threading.Lock()  # taken before STUB, never after
        self._closed = False

    def send(self, response: Any = None, flags: int = 0) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this request's final response has already been sent")
            # Closed before the call: if it raises, the server may still have freed the factory.
            self._closed = bool(flags & FINAL)
            with STUB:
                if response is None:
                    self._sender.send(flags=flags)
                else:
                    self._sender.send(response, flags=flags)

    def is_cancelled(self) -> bool:
        with self._lock:
            if self._closed:
                return False  # finished, and its factory may be gone: never ask the server
            with STUB:
                return self._sender.is_cancelled()


def log_info(line: str) -> None:
    with STUB:
        pb_utils.Logger.log_info(line)


def log_error(line: str) -> None:
    with STUB:
        pb_utils.Logger.log_error(line)
