"""The engine's failure contract (wingpt/engine/faults.py), in process with the embedded model.

The server tests (test_reliability_isolation.py) drive the same contract through the public interfaces;
these cover what cannot be provoked there on a CPU: out-of-memory in a step, once and over and over.
The model is the real embedded one, wrapped so that its forward can raise what a full GPU raises.
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
from wingpt.engine.faults import EngineBroken, FaultInjection, RequestFailed, is_unrecoverable
from wingpt.engine.inflight import EngineStopped, GenerationRequest, InflightBatchingEngine
from wingpt.errors import InvalidRequest
from wingpt.sampling import SamplingParams, apply_repetition_penalty, finite_logits, resolve_sampling, sample_next
from wingpt.settings import ServerSettings
from wingpt.tokenizer import load_tokenizer

TOKENS = load_tokenizer(None).encode("孩子咳嗽三天了怎么办？")
F32_MAX = float(torch.finfo(torch.float32).max)
F32_TINY = 1.401298464324817e-45  # the smallest positive (subnormal) float32


class OutOfMemoryAfter(torch.nn.Module):
    """The real model, whose forward raises CUDA's out-of-memory error while `failures` is above 0
    (`decode_only`: only in decode steps, one new token per sequence, as a growing batch would)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.failures = 0
        self.decode_only = False

    def forward(self, **kwargs: object) -> object:
        decode = kwargs["input_ids"].shape[1] == 1  # type: ignore[attr-defined]
        if self.failures > 0 and (decode or not self.decode_only):
            self.failures -= 1
            raise torch.OutOfMemoryError("CUDA out of memory (raised by the test)")
        return self.inner(**kwargs)


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


@pytest.fixture(scope="module")
def model() -> OutOfMemoryAfter:
    return OutOfMemoryAfter(load_model(ensure_embedded_model(Path.home() / ".cache" / "wingpt"), "cpu", torch.float32))


@pytest.fixture
def engine(model: OutOfMemoryAfter):
    model.failures, model.decode_only = 0, False
    broken: list[BaseException] = []
    engine = InflightBatchingEngine(model, max_batch_size=4, max_queue_size=8, max_seq_len=256,
                                    on_broken=broken.append)
    engine.broken = broken  # type: ignore[attr-defined]
    engine.start()
    yield engine
    engine.shutdown()


def ask(engine: InflightBatchingEngine, max_new: int = 4, on_tokens=None, **sampling) -> Answer:
    answer = Answer()
    engine.submit(GenerationRequest(
        request_id=str(id(answer)), prompt_ids=TOKENS, max_new_tokens=max_new, sampling=resolve_sampling(**sampling),
        end_id=-1, on_tokens=on_tokens or answer.on_tokens, on_error=answer.on_error))
    return answer


def test_one_out_of_memory_step_ends_its_requests_and_the_engine_serves_the_next(engine, model):
    model.failures = 1
    first = ask(engine)
    assert first.done.wait(60)
    assert isinstance(first.error, RequestFailed) and "OutOfMemoryError" in str(first.error)
    second = ask(engine)
    assert second.done.wait(60) and second.error is None and len(second.tokens) == 4
    assert engine.broken == []


def test_out_of_memory_in_every_step_breaks_the_engine_once_and_it_refuses_new_requests(engine, model):
    model.failures = 10**6
    answers = [ask(engine) for _ in range(3)]
    for answer in answers:
        assert answer.done.wait(60) and answer.error is not None
    assert wait_for(lambda: engine.broken)
    (broken,) = engine.broken
    assert isinstance(broken, EngineBroken) and "3 prefill step(s) in a row failed" in str(broken)
    with pytest.raises(EngineStopped):
        ask(engine)


def test_decode_steps_that_always_run_out_of_memory_break_the_engine_though_prefills_succeed(engine, model):
    model.failures, model.decode_only = 10**6, True
    for _ in range(3):
        answer = ask(engine)
        assert answer.done.wait(60)
        assert len(answer.tokens) == 1 and isinstance(answer.error, RequestFailed), "first token, then the step fails"
    assert wait_for(lambda: engine.broken)
    with pytest.raises(EngineStopped):
        ask(engine)


def test_a_callback_that_raises_ends_only_its_own_request(engine):
    def explode(new: list[int], finish: str | None) -> None:
        raise ConnectionError("the client went away mid-send")

    bad = Answer()
    engine.submit(GenerationRequest(request_id="bad", prompt_ids=TOKENS, max_new_tokens=8,
                                    sampling=resolve_sampling(), end_id=-1, on_tokens=explode, on_error=bad.on_error))
    good = ask(engine, max_new=8)
    assert bad.done.wait(60) and good.done.wait(60)
    assert isinstance(bad.error, RequestFailed) and "ConnectionError" in str(bad.error)
    assert good.error is None and len(good.tokens) == 8
    assert engine.broken == []


def test_token_ids_outside_the_vocabulary_are_refused_naming_the_field(engine):
    vocab = engine.vocab
    for field, request in (
        ("input_ids", {"prompt_ids": [*TOKENS, vocab]}),
        ("input_ids", {"prompt_ids": [-1, *TOKENS]}),
        ("bad_words_list", {"prompt_ids": TOKENS, "bad_sequences": [[5, vocab + 7]]}),
    ):
        with pytest.raises(InvalidRequest) as refused:
            engine.submit(GenerationRequest(request_id=field, max_new_tokens=2, sampling=resolve_sampling(),
                                            end_id=-1, on_tokens=lambda *_: None, on_error=lambda _: None, **request))
        assert refused.value.field == field


def test_cuda_errors_other_than_out_of_memory_are_unrecoverable():
    assert is_unrecoverable(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_unrecoverable(EngineBroken("step loop"))
    assert not is_unrecoverable(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_unrecoverable(ValueError("a bad value in one request"))


def wait_for(condition, timeout_s: float = 60) -> bool:
    done = threading.Event()
    for _ in range(int(timeout_s * 10)):
        if condition():
            return True
        done.wait(0.1)
    return bool(condition())


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
    seen = torch.zeros_like(row, dtype=torch.bool)
    seen[0, ::2] = True
    row = apply_repetition_penalty(row, seen, torch.tensor([params.repetition_penalty]))[0]
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
    for spec in ("request:x", "requests:1", "engine"):
        with pytest.raises(ValueError, match="WINGPT_TEST_FAULTS"):
            ServerSettings(test_faults=spec).validate()
