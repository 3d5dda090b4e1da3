"""The engine's failure contract: whose fault an exception is, and what happens then (issue 15).

One bad request must never take the engine down for every patient, and a replica whose engine cannot
go on must stop claiming readiness instead of answering `[UNAVAILABLE]` forever. Any engine (the
in-flight engine, the paged engine) keeps the same split:

- **This request's fault**: an exception while serving one request (its prefill alone, its sampling,
  its callbacks) ends that request alone with `RequestFailed` (the model answers `[INTERNAL]`); the
  engine keeps serving the others.
- **A step fault**: an exception in work shared by the batch (a decode step over every sequence)
  cannot be pinned on one request: the requests in that step end with `RequestFailed`, the engine
  drops their state and goes on. `max_step_faults` of one kind (decode or prefill) in a row (CUDA
  out-of-memory again and again) is `EngineBroken`.
- **Engine broken** (`EngineBroken`, or an error that leaves the device unusable, see
  `is_unrecoverable`): the loop cannot continue. The engine fails every request it holds, stops,
  and calls its health hook `on_broken(exc)` once; the hook makes the replica stop claiming
  readiness and exit (torch_llm: SIGTERM to its tritonserver, whose ports close at once; the
  supervisor or Kubernetes restarts it).

An engine adopts the contract by taking `on_broken` (and, for tests, `faults`) in its constructor,
wrapping each request's own work so that an exception becomes `RequestFailed` for that request,
counting failed shared steps, and raising `EngineBroken` out of its loop when it cannot go on
(wingpt/engine/engine.py is the reference; tests/test_engine_faults.py and
tests/test_reliability_isolation.py are what it must pass).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

OnBroken = Callable[[BaseException], None]


class RequestFailed(RuntimeError):
    """One request could not be served; the engine ended it alone and goes on serving the others."""


class EngineBroken(RuntimeError):
    """The engine's step loop cannot continue: the replica must stop claiming readiness and restart."""


def is_unrecoverable(exc: BaseException) -> bool:
    """Errors after which the device cannot be trusted (a device-side assert or a lost CUDA context
    poisons every later CUDA call); out-of-memory is not one of them, the batch can be dropped."""
    import torch  # here, not at the top: settings.py validates WINGPT_TEST_FAULTS without loading torch

    if isinstance(exc, EngineBroken):
        return True
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    return isinstance(exc, getattr(torch, "AcceleratorError", ())) or "CUDA error" in str(exc)


class InjectedFault(RuntimeError):
    """Raised by FaultInjection: a test build's stand-in for a request whose step fails."""


@dataclass(frozen=True)
class FaultInjection:
    """Test-only (`WINGPT_TEST_FAULTS`, never set in production): faults triggered by a request's
    `random_seed`, so that a test can drive them through the public interfaces.

    `request:<seed>`: that request's step raises (this request's fault).
    `engine:<seed>`: the step that serves that request raises EngineBroken (the engine is broken).
    `hold:<path>`: while that file exists the engine takes no step: a test holds the engine still, its running
    requests keeping their slots, without pausing the process (a stopped stub can take Triton down with it).
    """

    request_seed: int | None = None
    engine_seed: int | None = None
    hold_path: str | None = None

    @classmethod
    def parse(cls, spec: str) -> FaultInjection | None:
        """`"request:4242,engine:4343,hold:/tmp/x"`; empty means no injection (None)."""
        if not spec.strip():
            return None
        seeds: dict[str, int] = {}
        hold = None
        for item in spec.split(","):
            kind, _, value = item.strip().partition(":")
            if kind == "hold" and value:
                hold = value
            elif kind in ("request", "engine") and value.isdigit():
                seeds[kind] = int(value)
            else:
                raise ValueError(f"WINGPT_TEST_FAULTS takes request:<seed>,engine:<seed>,hold:<path>, got {item!r}")
        return cls(request_seed=seeds.get("request"), engine_seed=seeds.get("engine"), hold_path=hold)

    def before_step(self, seeds: list[int | None]) -> None:
        """Called once per step with the seeds of the requests in it."""
        while self.hold_path is not None and os.path.exists(self.hold_path):
            time.sleep(0.01)
        if self.engine_seed is not None and self.engine_seed in seeds:
            raise EngineBroken("injected engine fault (WINGPT_TEST_FAULTS, test builds only)")

    def before_token(self, seed: int | None) -> None:
        """Called for each request's token, inside the engine's per-request isolation."""
        if self.request_seed is not None and seed == self.request_seed:
            raise InjectedFault("injected request fault (WINGPT_TEST_FAULTS, test builds only)")
