"""Both engines' failures reach the client with the same status word, message and client error."""

from __future__ import annotations

import pytest
from wingpt_client import CancelledError, OverloadedError, UnavailableError, WingptClientError
from wingpt_client.errors import InvalidRequestError, error_from_message

from wingpt.engine_errors import CANCELLED, INTERNAL, INVALID_ARGUMENT, UNAVAILABLE, from_engine

# What TensorRT-LLM's backend sends for a full executor queue: the TllmException text of
# Executor::Impl::enqueueRequests (tag, source location, stack trace), as TRITONSERVER_ERROR_INTERNAL.
TRTLLM_QUEUE_FULL = (
    "[TensorRT-LLM][ERROR] Maximum queue size of 8 has been reached, please try again later "
    "(/src/tensorrt_llm/cpp/tensorrt_llm/executor/executorImpl.cpp:1234)\n"
    "1       0x7f3c2a1b2c3d tensorrt_llm::common::throwRuntimeError(char const*, int, char const*) + 77\n"
    "2       0x7f3c2a1b2c3e tensorrt_llm::executor::Executor::Impl::enqueueRequests(...) + 1200"
)
TORCH_QUEUE_FULL = "[UNAVAILABLE] server overloaded: 8 requests already waiting (max_queue_size)"


@pytest.mark.parametrize("engine_text", [
    TRTLLM_QUEUE_FULL,
    TORCH_QUEUE_FULL,
    f"in ensemble 'ensemble', {TORCH_QUEUE_FULL}",
    "Exceeds maximum queue size",  # Triton's own scheduler
])
def test_a_full_queue_is_overload_for_every_engine(engine_text):
    error = from_engine(engine_text)
    assert error.kind == UNAVAILABLE and error.overloaded
    assert error.text.startswith("[UNAVAILABLE] server overloaded: ")
    assert "max_queue_size" in error.message
    assert isinstance(error_from_message(error.text), OverloadedError)


def test_the_trtllm_overload_names_the_queue_limit_without_the_stack_trace():
    error = from_engine(TRTLLM_QUEUE_FULL)
    assert error.message == "server overloaded: the engine queue is full (8 requests waiting, max_queue_size)"


def test_torch_llm_words_pass_through_unchanged():
    assert from_engine("[INVALID_ARGUMENT] max_tokens: must be > 0, got 0") == from_engine(
        "in ensemble 'ensemble', [INVALID_ARGUMENT] max_tokens: must be > 0, got 0")
    invalid = from_engine("[INVALID_ARGUMENT] max_tokens: must be > 0, got 0")
    assert (invalid.kind, invalid.message) == (INVALID_ARGUMENT, "max_tokens: must be > 0, got 0")
    stopped = from_engine("[UNAVAILABLE] the engine is not running")
    assert stopped.kind == UNAVAILABLE and not stopped.overloaded
    assert isinstance(error_from_message(stopped.text), UnavailableError)


def test_a_cancellation_is_cancelled_not_a_failure():
    for text in ("Request was cancelled", "[CANCELLED] the request was cancelled"):
        error = from_engine(text)
        assert error.kind == CANCELLED and error.cancelled
        assert isinstance(error_from_message(error.text), CancelledError)


def test_any_other_engine_failure_is_internal_with_its_first_line():
    text = ("Executor failed process requestId 5 due to the following error: [TensorRT-LLM][ERROR] "
            "Assertion failed: Encountered an error in forwardAsync (/src/batch_manager.cpp:88)\n1 0x7f... frame")
    error = from_engine(text)
    assert error.kind == INTERNAL
    assert error.message == ("engine failed: Executor failed process requestId 5 due to the following error: "
                             "Encountered an error in forwardAsync")
    mapped = error_from_message(error.text)
    assert type(mapped) is WingptClientError and mapped.code == INTERNAL


def test_the_client_maps_the_raw_trtllm_queue_text_to_overload_as_a_second_line_of_defence():
    """Should a server pass TensorRT-LLM's text through unmapped (an old ensemble), it is still overload."""
    for raw in (TRTLLM_QUEUE_FULL, f"in ensemble 'ensemble', {TRTLLM_QUEUE_FULL}",
                f"[INTERNAL] {TRTLLM_QUEUE_FULL}"):
        error = error_from_message(raw, "id-7")
        assert isinstance(error, OverloadedError) and error.request_id == "id-7"
    assert isinstance(error_from_message("[INVALID_ARGUMENT] queue: bad"), InvalidRequestError)
