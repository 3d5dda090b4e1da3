"""A lone sequence decodes in the fixed-shape cache (captured as a CUDA graph on GPUs) and gives exactly
the tokens the batch path gives, also when other requests join it mid-answer and leave again."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from wingpt.engine.checkpoint import load_model
from wingpt.engine.embedded import ensure_embedded_model
from wingpt.engine.inflight import GenerationRequest, InflightBatchingEngine
from wingpt.sampling import resolve_sampling
from wingpt.tokenizer import load_tokenizer

PROMPTS = ["宝宝15个月37.3度算发烧吗？", "孩子咳嗽三天了怎么办？", "我最近总是失眠，应该怎么调理？"]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(ensure_embedded_model(Path.home() / ".cache" / "wingpt"), "cpu", torch.float32)


class Answer:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.done = threading.Event()
        self.first = threading.Event()

    def on_tokens(self, new: list[int], finish: str | None) -> None:
        self.tokens += new
        self.first.set()
        if finish is not None:
            self.done.set()


def ask(engine: InflightBatchingEngine, prompt: str, max_new: int, name: str, **sampling) -> Answer:
    answer = Answer()
    engine.submit(GenerationRequest(
        request_id=name, prompt_ids=load_tokenizer(None).encode(prompt), max_new_tokens=max_new,
        sampling=resolve_sampling(**({"temperature": 0.0} | sampling)), end_id=-1,
        on_tokens=answer.on_tokens, on_error=lambda exc: answer.done.set()))
    return answer


def run_alone(model: torch.nn.Module, graph: bool, prompt: str, max_new: int, **sampling) -> list[int]:
    engine = InflightBatchingEngine(model, max_batch_size=4, max_queue_size=4, max_seq_len=256,
                                    single_stream_graph=graph)
    engine.start()
    try:
        answer = ask(engine, prompt, max_new, "alone", **sampling)
        assert answer.done.wait(120)
        # the first token comes from the prefill; every later one from a decode step
        assert engine.stats().single_stream_steps == (max_new - 1 if graph else 0)
        return answer.tokens
    finally:
        engine.shutdown()


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "top_p": 0.9, "seed": 7}])
def test_a_lone_sequence_gives_the_same_tokens_in_the_fixed_cache(model, sampling) -> None:
    batch_path = run_alone(model, False, PROMPTS[0], 24, **sampling)
    fixed_path = run_alone(model, True, PROMPTS[0], 24, **sampling)
    assert len(fixed_path) == 24
    assert fixed_path == batch_path


def test_joining_requests_move_it_back_to_the_batch_and_every_answer_stays_the_same(model) -> None:
    expected = [run_alone(model, False, p, 40) for p in PROMPTS]
    engine = InflightBatchingEngine(model, max_batch_size=4, max_queue_size=4, max_seq_len=256,
                                    single_stream_graph=True)
    engine.start()
    try:
        first = ask(engine, PROMPTS[0], 40, "a")
        assert first.first.wait(60)
        while len(first.tokens) < 5:  # decoding alone, in the fixed cache
            first.done.wait(0.01)
        others = [ask(engine, p, 40, f"b{i}") for i, p in enumerate(PROMPTS[1:])]
        for answer in [first, *others]:
            assert answer.done.wait(120)
        steps_before = engine.stats().single_stream_steps
        assert steps_before >= 4, "the first answer started alone, in the fixed cache"
        last = ask(engine, PROMPTS[1], 40, "c")  # alone again after the others left
        assert last.done.wait(120)
        assert engine.stats().single_stream_steps == steps_before + 39
    finally:
        engine.shutdown()
    assert [first.tokens, *(a.tokens for a in others)] == expected
    assert last.tokens == expected[1]
