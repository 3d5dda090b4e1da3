"""The engine's delivery thread: callbacks in order, and a thread that fell behind catches up in one
callback per request (each callback is a response sent through Triton, a round trip)."""

from __future__ import annotations

import threading

from wingpt.engine.delivery import Delivery, coalesce
from wingpt.engine.requests import FINISH_CANCELLED, GenerationRequest
from wingpt.sampling import SamplingParams


def _request(calls: list, name: str, entered: threading.Event | None = None,
             gate: threading.Event | None = None) -> GenerationRequest:
    def on_tokens(new: list[int], finish: str | None) -> None:
        if gate is not None and not calls:
            entered.set()
            gate.wait(10)
        calls.append((name, new, finish))

    return GenerationRequest(request_id=name, prompt_ids=[1], max_new_tokens=8, sampling=SamplingParams(),
                             end_id=-1, on_tokens=on_tokens, on_error=lambda exc: calls.append((name, exc)))


def test_successive_tokens_of_a_request_merge_and_other_requests_stay_apart() -> None:
    a, b = _request([], "a"), _request([], "b")
    items = [(a, ([1], None)), (b, ([7], None)), (a, ([2], None)), (a, ([3], "stop")), (b, ([8], None))]
    assert coalesce(items) == [(a, ([1, 2, 3], "stop")), (b, ([7, 8], None))]


def test_errors_and_cancellations_are_never_merged_into_tokens() -> None:
    a = _request([], "a")
    failure = RuntimeError("boom")
    assert coalesce([(a, ([1], None)), (a, (failure,))]) == [(a, ([1], None)), (a, (failure,))]
    assert coalesce([(a, ([1], None)), (a, ([], FINISH_CANCELLED))]) == [(a, ([1], None)), (a, ([], FINISH_CANCELLED))]


def test_a_delivery_thread_that_fell_behind_sends_what_queued_up_at_once() -> None:
    calls: list = []
    entered, gate = threading.Event(), threading.Event()
    a, b = _request(calls, "a", entered, gate), _request(calls, "b")
    delivery = Delivery(on_failure=lambda request_id: None)
    try:
        delivery.step_tokens([(a, [1], None)])  # its callback blocks until the gate opens
        assert entered.wait(10)
        for step in range(2, 6):
            delivery.step_tokens([(a, [step], None if step < 5 else "length"), (b, [10 + step], None)])
        gate.set()
    finally:
        delivery.close(timeout=10)
    assert calls == [("a", [1], None), ("a", [2, 3, 4, 5], "length"), ("b", [12, 13, 14, 15], None)]
