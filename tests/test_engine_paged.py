"""The paged engine: every request gets exactly the tokens it would get alone (and that transformers'
`generate` gives with the same repetition penalty), however requests join, leave, share prefixes or are
preempted by a tiny KV budget; the budget is never exceeded; sampling, stops, bans and cancellation work
per request, and one request's failure ends only that request."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import torch

from wingpt.engine.checkpoint import load_model
from wingpt.engine.embedded import ensure_embedded_model
from wingpt.engine.engine import PagedEngine
from wingpt.engine.model_runner import kv_bytes_per_token
from wingpt.engine.requests import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP, GenerationRequest
from wingpt.errors import InvalidRequest
from wingpt.sampling import resolve_sampling

BLOCK = 16
OVERLAP = False  # set for each test by the `overlap` fixture


@pytest.fixture(autouse=True, params=[False, True], ids=["sync", "overlap"])
def overlap(request: pytest.FixtureRequest) -> None:
    """Every behaviour holds both ways the engine reads a step's tokens: before it launches the next step, or
    once the next step is launched, with placeholders filled in on the device (overlap, a GPU's default)."""
    global OVERLAP
    OVERLAP = request.param


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(ensure_embedded_model(Path.home() / ".cache" / "wingpt"), "cpu", torch.float32)


def prompt(length: int, seed: int) -> list[int]:
    return torch.randint(0, 151_000, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def reference(model: torch.nn.Module, ids: list[int], max_new: int, penalty: float = 1.1) -> list[int]:
    """transformers' own greedy `generate` with the repetition penalty, end id ignored."""
    x = torch.tensor([ids])
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, min_new_tokens=max_new,
                         do_sample=False, repetition_penalty=penalty, pad_token_id=0, eos_token_id=None)
    return out[0, len(ids):].tolist()


class Answer:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.error: Exception | None = None
        self.done = threading.Event()
        self.progress = threading.Condition()

    def on_tokens(self, new: list[int], finish: str | None) -> None:
        with self.progress:
            self.tokens += new
            self.progress.notify_all()
        if finish is not None:
            self.finish = finish
            self.done.set()

    def on_error(self, exc: Exception) -> None:
        self.error = exc
        self.done.set()

    def wait_for(self, tokens: int) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: len(self.tokens) >= tokens or self.done.is_set(), 120)


def engine(model: torch.nn.Module, blocks: int = 0, **kwargs) -> PagedEngine:
    budget = blocks * BLOCK * kv_bytes_per_token(model.config, torch.float32)
    e = PagedEngine(model, max_batch_size=kwargs.pop("max_batch_size", 8), max_queue_size=32, max_seq_len=512,
                    kv_block_size=BLOCK, kv_cache_bytes=budget, overlap=OVERLAP, **kwargs)
    e.start()
    return e


def ask(e: PagedEngine, ids: list[int], max_new: int, name: str, end_id: int = -1, **fields) -> Answer:
    answer = Answer()
    sampling = resolve_sampling(**({"temperature": 0.0} | fields.pop("sampling", {})))
    e.submit(GenerationRequest(request_id=name, prompt_ids=ids, max_new_tokens=max_new, sampling=sampling,
                               end_id=end_id, on_tokens=answer.on_tokens, on_error=answer.on_error, **fields))
    return answer


def finish(*answers: Answer) -> None:
    for a in answers:
        assert a.done.wait(300)
        assert a.error is None, a.error


def test_the_transformers_surface_the_engine_uses_is_there(model) -> None:
    """What model_runner.py relies on (and nothing else of the library): Qwen2's modules and rotary helper."""
    import inspect

    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    decoder = model.model
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        assert hasattr(decoder, name), name
    layer = decoder.layers[0]
    for name in ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn"):
        assert hasattr(layer, name), name
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert isinstance(getattr(layer.self_attn, name), torch.nn.Linear), name
    assert isinstance(model.lm_head, torch.nn.Linear)
    cos, sin = decoder.rotary_emb(torch.zeros(1, 3, model.config.hidden_size), torch.arange(3)[None])
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    assert cos.shape == sin.shape == (1, 3, head_dim)
    assert list(inspect.signature(apply_rotary_pos_emb).parameters)[:4] == ["q", "k", "cos", "sin"]


def test_a_lone_request_gives_transformers_generate_tokens(model) -> None:
    ids = prompt(21, 1)
    e = engine(model)
    try:
        answer = ask(e, ids, 40, "solo")
        finish(answer)
        overlapped = e.stats().overlapped_steps
    finally:
        e.shutdown()
    assert answer.finish == FINISH_LENGTH
    assert answer.tokens == reference(model, ids, 40)
    assert (overlapped >= 39) == OVERLAP, "with overlap, each step after the prefill read the last one's token late"


def test_requests_joining_and_leaving_under_a_tiny_block_budget_each_get_their_solo_tokens(model) -> None:
    rng = random.Random(16)
    cases = [(prompt(rng.randint(3, 90), 100 + i), rng.randint(8, 40)) for i in range(10)]
    expected = [reference(model, ids, n) for ids, n in cases]
    # 12 blocks of 16 tokens: far less than the 10 requests need together, enough for the longest alone.
    e = engine(model, blocks=12, max_num_tokens=48)
    peak = [0]
    stop = threading.Event()

    def watch() -> None:  # what the metrics report while it runs
        while not stop.wait(0.001):
            peak[0] = max(peak[0], e.stats().kv_blocks_used)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers: list[Answer] = []
        for i, (ids, n) in enumerate(cases):
            if answers:  # join when an earlier request has made a random number of tokens
                earlier = rng.choice(answers)
                earlier.wait_for(rng.randint(1, 8))
            answers.append(ask(e, ids, n, f"r{i}"))
        finish(*answers)
        stats = e.stats()
    finally:
        stop.set()
        watcher.join()
        e.shutdown()
    assert [a.tokens for a in answers] == expected
    assert stats.preempted > 0, "the budget was tight enough to force preemption"
    assert 0 < peak[0] <= stats.kv_blocks_used_peak <= stats.kv_blocks_max == 12
    assert e.runner.k_cache.shape[1] == (12 + 1) * BLOCK, "the cache holds the budget's blocks and a scratch block"
    assert stats.kv_blocks_used == 0 and stats.kv_blocks_free == 12, "every block came back"


def test_a_second_turn_reuses_the_first_turns_blocks_and_gives_the_same_tokens(model) -> None:
    first_turn = prompt(70, 7)
    second_turn = first_turn + prompt(12, 8)
    e = engine(model, blocks=64)
    try:
        finish(ask(e, first_turn, 10, "turn1"))
        before = e.stats().prefix_hit_tokens
        second = ask(e, second_turn, 24, "turn2")
        finish(second)
        reused = e.stats().prefix_hit_tokens - before
    finally:
        e.shutdown()
    assert reused == (70 // BLOCK) * BLOCK, "every full block of the first turn's prompt was shared"
    assert second.tokens == reference(model, second_turn, 24)


def test_requests_sharing_a_running_requests_preamble_reuse_its_blocks_and_get_their_solo_tokens(model) -> None:
    preamble = prompt(50, 9)
    prompts = [preamble + prompt(5 + i, 20 + i) for i in range(4)]
    expected = [reference(model, p, 16) for p in prompts]
    e = engine(model, blocks=40)
    try:
        first = ask(e, prompts[0], 16, "s0")
        first.wait_for(1)  # its blocks are computed (and named) once its prefill ran
        answers = [first, *(ask(e, p, 16, f"s{i}") for i, p in enumerate(prompts[1:], 1))]
        finish(*answers)
        assert e.stats().prefix_hit_tokens == 3 * (50 // BLOCK) * BLOCK
    finally:
        e.shutdown()
    assert [a.tokens for a in answers] == expected


def test_a_long_prompt_is_prefilled_in_chunks_while_a_running_stream_keeps_decoding(model) -> None:
    long_prompt = prompt(400, 3)
    e = engine(model, blocks=64, max_num_tokens=32)
    try:
        running = ask(e, prompt(10, 4), 200, "running")
        running.wait_for(2)
        long = ask(e, long_prompt, 8, "long")
        long.wait_for(1)
        with running.progress:
            tokens_at_first_long_token = len(running.tokens)
        finish(running, long)
    finally:
        e.shutdown()
    # 400 prompt tokens in chunks of at most 31 beside the running decode: at least 13 steps, each of which
    # also gave the running stream a token.
    assert tokens_at_first_long_token >= 2 + 12
    assert long.tokens == reference(model, long_prompt, 8)


def test_seeded_sampling_repeats_under_batching_and_preemption(model) -> None:
    sampling = {"temperature": 0.9, "top_k": 50, "top_p": 0.95, "seed": 1234}
    ids = prompt(30, 5)
    e = engine(model, blocks=64)
    try:
        alone = ask(e, ids, 30, "alone", sampling=sampling)
        finish(alone)
    finally:
        e.shutdown()
    e = engine(model, blocks=8, max_num_tokens=24)
    try:
        others = [ask(e, prompt(40, 60 + i), 30, f"o{i}") for i in range(3)]
        again = ask(e, ids, 30, "again", sampling=sampling)
        finish(again, *others)
        assert e.stats().preempted > 0
    finally:
        e.shutdown()
    assert again.tokens == alone.tokens
    assert alone.tokens != reference(model, ids, 30), "it sampled rather than decoded greedily"


def test_stop_and_bad_words_and_end_id_end_or_steer_only_their_request(model) -> None:
    ids = prompt(25, 6)
    greedy = reference(model, ids, 20)
    e = engine(model)
    try:
        stopped = ask(e, ids, 20, "stop", stop_sequences=[greedy[4:6]])
        banned = ask(e, ids, 20, "bad", bad_sequences=[[greedy[0]]])
        ended = ask(e, ids, 20, "end", end_id=greedy[2])
        plain = ask(e, ids, 20, "plain")
        finish(stopped, banned, ended, plain)
    finally:
        e.shutdown()
    assert stopped.tokens == greedy[:6] and stopped.finish == FINISH_STOP
    assert banned.tokens[0] != greedy[0] and greedy[0] not in banned.tokens
    assert ended.tokens == greedy[:3] and ended.finish == FINISH_STOP
    assert plain.tokens == greedy


def test_cancelling_ends_that_request_only_by_id_or_by_its_client_going_away(model) -> None:
    e = engine(model)
    gone = threading.Event()
    try:
        victim = ask(e, prompt(10, 11), 400, "victim")
        client_left = ask(e, prompt(10, 12), 400, "left", is_cancelled=gone.is_set)
        other = ask(e, prompt(10, 13), 30, "other")
        victim.wait_for(3)
        e.cancel("victim")
        gone.set()
        finish(victim, client_left, other)
        assert e.stats().cancelled == 2
    finally:
        e.shutdown()
    assert victim.finish == FINISH_CANCELLED and len(victim.tokens) < 400
    assert client_left.finish == FINISH_CANCELLED
    assert other.finish == FINISH_LENGTH and other.tokens == reference(model, prompt(10, 13), 30)


def test_a_request_larger_than_the_whole_kv_budget_is_refused_with_the_field_named(model) -> None:
    e = engine(model, blocks=4)
    try:
        with pytest.raises(InvalidRequest) as info:
            ask(e, prompt(60, 17), 10, "huge")
        assert info.value.field == "max_tokens"
    finally:
        e.shutdown()


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "top_p": 0.9, "seed": 7}])
def test_decode_steps_in_the_padded_graph_shapes_give_the_same_tokens(model, sampling) -> None:
    cases = [(prompt(9 + 13 * i, 40 + i), 20 + 5 * i) for i in range(3)]
    answers = {}
    for graphs in (False, True):
        e = engine(model, blocks=64, cuda_graphs=graphs)
        try:
            first = ask(e, *cases[0], "g0", sampling=sampling)
            first.wait_for(3)  # alone, then joined by two more, which leave at different steps
            rest = [ask(e, ids, n, f"g{i}", sampling=sampling) for i, (ids, n) in enumerate(cases[1:], 1)]
            finish(first, *rest)
            assert (e.stats().graph_steps > 0) == graphs
        finally:
            e.shutdown()
        answers[graphs] = [a.tokens for a in (first, *rest)]
    assert answers[True] == answers[False]
    if not sampling:
        assert answers[True] == [reference(model, ids, n) for ids, n in cases]


def test_the_packed_projections_are_the_models_own_weights_and_a_second_engine_reuses_them(model) -> None:
    """q/k/v and gate/up run as one GEMM each; packing them must not double the weights' memory, and the model
    object stays transformers' model (the tests' `generate` reference runs on it)."""
    first, second = engine(model, blocks=8), engine(model, blocks=8)
    try:
        attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
        qkv, bias = first.runner.qkv[0]
        assert attn.q_proj.weight.data_ptr() == qkv.data_ptr(), "q_proj's weight is a view of the packed matrix"
        assert attn.v_proj.bias.data_ptr() == bias[-attn.v_proj.out_features:].data_ptr()
        assert mlp.up_proj.weight.data_ptr() == first.runner.gate_up[0][mlp.gate_proj.out_features:].data_ptr()
        assert second.runner.qkv[0][0] is qkv, "a second engine on the same model packs nothing again"
    finally:
        first.shutdown()
        second.shutdown()


def test_decode_attention_splits_a_lone_rows_context_but_not_a_full_batchs() -> None:
    from wingpt.engine.kernels.paged_attention import split_count

    assert split_count(rows=1, heads=32, context=512) == 8, "parts of at least 64 positions"
    assert split_count(rows=1, heads=32, context=4096) == 32, "enough programs to fill the GPU, no more"
    assert split_count(rows=64, heads=32, context=4096) == 1
    assert split_count(rows=1, heads=32, context=32) == 1
