"""The engine's failure contract (wingpt/engine/faults.py), in process with the embedded model.

The server tests (test_reliability_isolation.py) drive the same contract through the public interfaces;
these cover what cannot be provoked there on a CPU: out-of-memory in a step, once and over and over, raised
into the paged engine's real model step as a full GPU would raise it; and the sampler on hostile logits.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wingpt.engine.checkpoint import load_model
from wingpt.engine.embedded import ensure_embedded_model
from wingpt.engine.engine import PagedEngine
from wingpt.engine.faults import EngineBroken, FaultInjection, RequestFailed, is_unrecoverable
from wingpt.engine.requests import EngineStopped, GenerationRequest
from wingpt.errors import InvalidRequest
from wingpt.sampling import SamplingParams, finite_logits, penalise_repeats, resolve_sampling, sample_next
from wingpt.settings import ServerSettings

PROMPT = list(range(1000, 1012))
F32_MAX = float(torch.finfo(torch.float32).max)
F32_TINY = 1.401298464324817e-45  # the smallest positive (subnormal) float32


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(ensure_embedded_model(Path.home() / ".cache" / "wingpt"), "cpu", torch.float32)


class Answer:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.error: Exception | None = None
        self.done = threading.Event()

    def on_tokens(self, new: list[int], finish: str | None) -> None:
        self.tokens += new
        if finish is not None:
            self.done.set()

    def on_error(self, exc: Exception) -> None:
        self.error = exc
        self.done.set()


class Engine:
    """A started engine whose model step raises out-of-memory while `failures` > 0 (`decode_only`: only in
    steps that are all decodes, as a growing batch would)."""

    def __init__(self, model: torch.nn.Module, **kwargs) -> None:
        self.broken: list[BaseException] = []
        self.engine = PagedEngine(model, max_batch_size=4, max_queue_size=8, max_seq_len=256,
                                  on_broken=self.broken.append, **kwargs)
        self.failures = 0
        self.decode_only = False
        forward = self.engine.runner.forward

        def failing_forward(step):
            decode = not step.prefills
            if self.failures > 0 and (decode or not self.decode_only):
                self.failures -= 1
                raise torch.OutOfMemoryError("CUDA out of memory (raised by the test)")
            return forward(step)

        self.engine.runner.forward = failing_forward
        self.engine.start()

    def ask(self, max_new: int = 4, on_tokens=None, seed: int | None = None) -> Answer:
        answer = Answer()
        self.engine.submit(GenerationRequest(
            request_id=str(id(answer)), prompt_ids=PROMPT, max_new_tokens=max_new,
            sampling=resolve_sampling(temperature=0.0, seed=seed), end_id=-1,
            on_tokens=on_tokens or answer.on_tokens, on_error=answer.on_error))
        return answer


@pytest.fixture(params=[False, True], ids=["sync", "overlap"])
def engine(model, request):
    """Both ways the engine can read a step's tokens: before the next step, or once it is launched (overlap)."""
    e = Engine(model, overlap=request.param)
    yield e
    e.engine.shutdown()


def test_one_out_of_memory_step_ends_its_requests_and_the_engine_serves_the_next(engine) -> None:
    engine.failures = 1
    first = engine.ask()
    assert first.done.wait(60)
    assert isinstance(first.error, RequestFailed) and "OutOfMemoryError" in str(first.error)
    second = engine.ask()
    assert second.done.wait(60) and second.error is None and len(second.tokens) == 4
    assert engine.broken == [] and engine.engine.stats().healthy
    assert engine.engine.stats().kv_blocks_used == 0, "the failed request's blocks came back"


def test_out_of_memory_in_every_step_breaks_the_engine_once_and_it_refuses_new_requests(engine) -> None:
    engine.failures = 10**6
    for _ in range(3):  # one after the other, so that each is a step of its own
        answer = engine.ask()
        assert answer.done.wait(60) and answer.error is not None
    assert wait_for(lambda: engine.broken)
    (broken,) = engine.broken
    assert isinstance(broken, EngineBroken) and "3 prefill step(s) in a row failed" in str(broken)
    assert not engine.engine.stats().healthy
    with pytest.raises(EngineStopped):
        engine.ask()


def test_decode_steps_that_always_run_out_of_memory_break_the_engine_though_prefills_succeed(engine) -> None:
    engine.failures, engine.decode_only = 10**6, True
    for _ in range(3):
        answer = engine.ask()
        assert answer.done.wait(60)
        assert len(answer.tokens) == 1 and isinstance(answer.error, RequestFailed), "first token, then the step fails"
    assert wait_for(lambda: engine.broken)
    assert "3 decode step(s) in a row failed" in str(engine.broken[0])
    with pytest.raises(EngineStopped):
        engine.ask()


def test_a_callback_that_raises_ends_only_its_own_request(engine) -> None:
    def explode(new: list[int], finish: str | None) -> None:
        raise ConnectionError("the client went away mid-send")

    bad = engine.ask(max_new=50, on_tokens=explode)
    good = engine.ask(max_new=8)
    assert bad.done.wait(60) and good.done.wait(60)
    assert isinstance(bad.error, RequestFailed) and "ConnectionError" in str(bad.error)
    assert good.error is None and len(good.tokens) == 8
    assert wait_for(lambda: engine.engine.stats().kv_blocks_used == 0), "the failed request was dropped"
    assert engine.broken == []


def test_an_injected_request_fault_ends_only_that_request(model) -> None:
    e = Engine(model, faults=FaultInjection(request_seed=4242))
    try:
        other = e.ask(max_new=20)
        doomed = e.ask(max_new=20, seed=4242)
        assert doomed.done.wait(60) and other.done.wait(60)
        assert isinstance(doomed.error, RequestFailed)
        assert other.error is None and len(other.tokens) == 20
        assert e.broken == []
    finally:
        e.engine.shutdown()


def test_an_injected_engine_fault_breaks_the_engine_and_ends_everyone(model) -> None:
    e = Engine(model, faults=FaultInjection(engine_seed=4343))
    try:
        running = e.ask(max_new=200)
        while not running.tokens:
            running.done.wait(0.01)
        e.ask(seed=4343)
        assert running.done.wait(60) and isinstance(running.error, EngineStopped)
        assert wait_for(lambda: e.broken) and isinstance(e.broken[0], EngineBroken)
    finally:
        e.engine.shutdown()


def test_token_ids_outside_the_vocabulary_are_refused_naming_the_field(engine) -> None:
    vocab = engine.engine.vocab
    for field, request in (
        ("input_ids", {"prompt_ids": [*PROMPT, vocab]}),
        ("input_ids", {"prompt_ids": [-1, *PROMPT]}),
        ("bad_words_list", {"prompt_ids": PROMPT, "bad_sequences": [[5, vocab + 7]]}),
    ):
        with pytest.raises(InvalidRequest) as refused:
            engine.engine.submit(GenerationRequest(request_id=field, max_new_tokens=2, sampling=resolve_sampling(),
                                                   end_id=-1, on_tokens=lambda *_: None, on_error=lambda _: None,
                                                   **request))
        assert refused.value.field == field


def wait_for(condition, timeout_s: float = 60) -> bool:
    pause = threading.Event()
    for _ in range(int(timeout_s * 100)):
        if condition():
            return True
        pause.wait(0.01)
    return bool(condition())


def test_cuda_errors_other_than_out_of_memory_are_unrecoverable():
    assert is_unrecoverable(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_unrecoverable(EngineBroken("step loop"))
    assert not is_unrecoverable(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_unrecoverable(ValueError("a bad value in one request"))


# ------------------------------------------------------------------ the sampler on hostile logits
hostile = st.lists(st.one_of(st.floats(width=32), st.sampled_from([float("inf"), float("-inf"), float("nan")])),
                   min_size=2, max_size=40).filter(lambda xs: any(x == x and x != float("-inf") for x in xs))
accepted_float = st.one_of(st.floats(min_value=0, max_value=F32_MAX, width=32),
                           st.sampled_from([F32_TINY, 1e-37, 1e-7, F32_MAX]))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile, accepted_float, st.integers(0, 2**31 - 1),
       st.one_of(st.floats(min_value=F32_TINY, max_value=1.0, width=32), st.just(1.0)),
       st.one_of(st.floats(min_value=F32_TINY, max_value=F32_MAX, width=32), st.sampled_from([F32_TINY, F32_MAX])),
       st.integers(0, 2**64 - 1))
def test_any_accepted_sampling_values_pick_a_possible_token_from_any_logits(
        logits, temperature, top_k, top_p, penalty, seed):
    params = resolve_sampling(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty,
                              seed=seed)
    row = finite_logits(torch.tensor([logits]))
    history = torch.arange(0, len(logits), 2)[None]  # every other token was seen
    row = penalise_repeats(row, history, torch.tensor([params.repetition_penalty]))[0]
    assert not row.isnan().any() and not (row == float("inf")).any()
    generator = torch.Generator().manual_seed(params.seed)
    token = sample_next(row, params, generator)
    assert 0 <= token < len(logits)
    assert row[token] > float("-inf"), "never a token the model made impossible (NaN)"


def test_a_degenerate_temperature_decodes_greedily():
    logits = torch.tensor([0.5, 3.0, -1.0, 2.999])
    for temperature in (1e-37, F32_TINY):
        params = SamplingParams(temperature=temperature)
        assert {sample_next(logits, params, torch.Generator().manual_seed(s)) for s in range(20)} == {1}


def test_the_test_only_fault_injection_is_off_unless_set_and_a_typo_stops_the_server_from_starting():
    assert FaultInjection.parse("") is None
    assert FaultInjection.parse("request:4242,engine:4343") == FaultInjection(request_seed=4242, engine_seed=4343)
    assert FaultInjection.parse("hold:/tmp/held") == FaultInjection(hold_path="/tmp/held")
    for spec in ("request:x", "requests:1", "engine", "hold:"):
        with pytest.raises(ValueError, match="WINGPT_TEST_FAULTS"):
            ServerSettings(test_faults=spec).validate()
