"""The PyTorch engine: in-flight batching over a paged KV cache with a memory budget.

One step thread owns the model. Each iteration it takes new and cancelled requests, asks the scheduler
for the step's chunks (scheduler.py: token budget, free blocks, preemption), runs them (model_runner.py),
samples one token for every sequence whose tokens are all computed, and hands the tokens to the delivery
thread (delivery.py), which calls the requests' callbacks. Why not transformers' continuous-batching
manager: see docs/engine.md (it cannot apply the model card's repetition penalty, per-request seeds or bad
words, and its extension point differs between the transformers versions we run).

Failure isolation: a request whose sampling or callback fails ends alone with its error; a failed model
step ends the requests in that step; after `max_step_failures` failed steps in a row the engine stops,
reports itself unhealthy (`stats().healthy`) and ends everyone with EngineStopped.
"""

from __future__ import annotations

import logging
import threading

import torch

from wingpt.engine.block_manager import BlockManager
from wingpt.engine.cuda_graphs import DecodeGraphs
from wingpt.engine.delivery import CancellationPoller, Delivery
from wingpt.engine.model_runner import ModelRunner, kv_bytes_per_token
from wingpt.engine.requests import FINISH_CANCELLED, EngineOverloaded, EngineStats, EngineStopped, GenerationRequest
from wingpt.engine.scheduler import Scheduler
from wingpt.engine.sequence import Sequence
from wingpt.errors import InvalidRequest
from wingpt.sampling import SamplingParams, penalise_repeats, sample_next

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 32
DEFAULT_GPU_MEM_FRACTION = 0.85


def kv_cache_blocks(model: torch.nn.Module, block_size: int, *, cache_bytes: int = 0,
                    free_gpu_mem_fraction: float = DEFAULT_GPU_MEM_FRACTION, fallback_tokens: int = 0) -> int:
    """Blocks that fit the budget: `cache_bytes` if given; on a GPU, that fraction of the memory free now
    (after the weights, like TensorRT-LLM's `kv_cache_free_gpu_mem_fraction`); else `fallback_tokens`."""
    param = next(model.parameters())
    per_block = kv_bytes_per_token(model.config, param.dtype) * block_size
    if cache_bytes <= 0 and param.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(param.device)
        cache_bytes = int(free * free_gpu_mem_fraction)
    if cache_bytes <= 0:
        cache_bytes = fallback_tokens * per_block // block_size
    return max(1, cache_bytes // per_block)


class PagedEngine:
    """Serves many concurrent generations from one model; see the module docstring."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        max_batch_size: int,
        max_queue_size: int,
        max_seq_len: int,
        max_num_tokens: int = 8192,
        kv_block_size: int = DEFAULT_BLOCK_SIZE,
        kv_cache_bytes: int = 0,
        kv_cache_free_gpu_mem_fraction: float = DEFAULT_GPU_MEM_FRACTION,
        max_step_failures: int = 3,
        cuda_graphs: bool = False,
    ) -> None:
        self.device = next(model.parameters()).device
        self.vocab = model.config.vocab_size
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_seq_len = max_seq_len
        self.max_step_failures = max_step_failures
        num_blocks = kv_cache_blocks(model, kv_block_size, cache_bytes=kv_cache_bytes,
                                     free_gpu_mem_fraction=kv_cache_free_gpu_mem_fraction,
                                     fallback_tokens=max_batch_size * max_seq_len)
        self.blocks = BlockManager(num_blocks, kv_block_size)
        self.scheduler = Scheduler(self.blocks, max_batch_size, max(max_num_tokens, 1))
        self.runner = ModelRunner(model, num_blocks, kv_block_size)
        # Decode steps as replayed CUDA graphs (cuda_graphs.py); on a CPU the same padded path runs eagerly.
        self.graphs = (DecodeGraphs(self.runner, max_batch_size, max_seq_len, capture=self.device.type == "cuda")
                       if cuda_graphs else None)
        # Each live sequence's tokens (prompt and output) on the device, for the repetition penalty; past a
        # row's length it repeats the row's first token, so any prefix of it is a valid history.
        rows = max_batch_size + max_queue_size
        self._history = torch.zeros(rows, max_seq_len + 1, dtype=torch.long, device=self.device)
        self._free_rows = list(range(rows - 1, -1, -1))
        self._lock = threading.Condition()
        self._incoming: list[GenerationRequest] = []
        self._cancel_ids: set[str] = set()
        self._live: dict[str, list[Sequence]] = {}  # by request id, every sequence not yet finished
        self._waiting_count = 0
        self._completed = 0
        self._cancelled = 0
        self._steps = 0
        self._running = False
        self._healthy = True
        self._thread: threading.Thread | None = None
        self._delivery: Delivery | None = None
        self._poller: CancellationPoller | None = None

    # ----------------------------------------------------------------- public API (any thread)
    def start(self) -> None:
        self._running = True
        self._delivery = Delivery(on_failure=self.cancel)
        self._poller = CancellationPoller(self._live_requests, self.cancel)
        self._thread = threading.Thread(target=self._loop, name="paged-engine", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        if not request.prompt_ids:
            raise InvalidRequest("input_ids", "the prompt is empty")
        total = len(request.prompt_ids) + request.max_new_tokens
        if total > self.max_seq_len:
            raise InvalidRequest(
                "max_tokens",
                f"prompt ({len(request.prompt_ids)} tokens) + max_tokens ({request.max_new_tokens}) "
                f"exceeds the context window of {self.max_seq_len} tokens",
            )
        capacity = self.blocks.num_blocks * self.blocks.block_size
        if total > capacity:
            raise InvalidRequest("max_tokens", f"prompt + max_tokens ({total} tokens) exceeds the KV cache's "
                                 f"{capacity} tokens (raise the KV cache budget)")
        if any(not 0 <= t < self.vocab for t in request.prompt_ids):
            raise InvalidRequest("input_ids", f"token ids must be in [0, {self.vocab})")
        with self._lock:
            if not self._running:
                raise EngineStopped("the engine is not running")
            if self._waiting_count + len(self._incoming) >= self.max_queue_size:
                raise EngineOverloaded(
                    f"server overloaded: {self._waiting_count + len(self._incoming)} requests already waiting "
                    "(max_queue_size)")
            self._incoming.append(request)
            self._lock.notify()

    def cancel(self, request_id: str) -> None:
        with self._lock:
            self._cancel_ids.add(request_id)
            self._lock.notify()

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(
                active=len(self.scheduler.running), waiting=self._waiting_count + len(self._incoming),
                completed=self._completed, cancelled=self._cancelled, max_batch_size=self.max_batch_size,
                kv_blocks_max=self.blocks.num_blocks, kv_blocks_free=self.blocks.num_free,
                kv_blocks_used=self.blocks.num_used, kv_tokens_per_block=self.blocks.block_size,
                kv_blocks_used_peak=self.blocks.peak_used, prefix_hit_tokens=self.blocks.prefix_hit_tokens,
                preempted=self.scheduler.preempted, steps=self._steps, healthy=self._healthy,
                graph_steps=self.graphs.replays if self.graphs is not None else 0)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the loop; requests still running or waiting end with EngineStopped."""
        with self._lock:
            self._running = False
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._poller is not None:
            self._poller.close()
        if self._delivery is not None:
            self._delivery.close(timeout)

    # ----------------------------------------------------------------- engine thread
    def _live_requests(self) -> list[tuple[str, object]]:
        with self._lock:
            return [(rid, seqs[0].request.is_cancelled) for rid, seqs in self._live.items()]

    def _loop(self) -> None:
        failures = 0
        try:
            while True:
                with self._lock:
                    while self._running and not self._live and not self._incoming and not self._cancel_ids:
                        self._lock.wait()
                    if not self._running:
                        break
                    incoming, self._incoming = self._incoming, []
                    cancel_ids, self._cancel_ids = self._cancel_ids, set()
                for request in incoming:
                    self._add(request)
                self._retire_cancelled(cancel_ids)
                if self._step():
                    failures = 0
                else:
                    failures += 1
                    if failures >= self.max_step_failures:
                        raise RuntimeError(f"{failures} model steps in a row failed")
        except Exception as exc:
            log.exception("engine loop failed: the engine is unhealthy")
            self._healthy = False
            self._fail_all(EngineStopped(f"the engine failed: {exc}"))
            return
        self._fail_all(EngineStopped("the engine is shutting down"))

    def _add(self, request: GenerationRequest) -> None:
        seq = Sequence(request, list(request.prompt_ids), len(request.prompt_ids),
                       generator=_generator(request.sampling, self.device))
        seq.seen_row = self._free_rows.pop()
        row = self._history[seq.seen_row]
        row.fill_(seq.tokens[0])
        row[:len(seq.tokens)] = torch.tensor(seq.tokens, device=self.device)
        self.scheduler.add(seq)
        with self._lock:
            self._live.setdefault(request.request_id, []).append(seq)
            self._waiting_count = len(self.scheduler.waiting)

    def _finish(self, seq: Sequence) -> None:
        self.scheduler.remove(seq)
        self._free_rows.append(seq.seen_row)
        with self._lock:
            seqs = self._live.get(seq.request_id, [])
            if seq in seqs:
                seqs.remove(seq)
            if not seqs:
                self._live.pop(seq.request_id, None)
            self._waiting_count = len(self.scheduler.waiting)

    def _deliver_error(self, seq: Sequence, exc: Exception) -> None:
        self._finish(seq)
        self._delivery.put(seq.request_id, seq.request.on_error, exc)

    def _retire_cancelled(self, cancel_ids: set[str]) -> None:
        for request_id in cancel_ids:
            with self._lock:
                seqs = list(self._live.get(request_id, []))
            for seq in seqs:
                self._finish(seq)
                self._cancelled += 1
                self._delivery.put(request_id, seq.request.on_tokens, [], FINISH_CANCELLED)

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            self._running = False
            doomed = [seq for seqs in self._live.values() for seq in seqs]
            incoming, self._incoming = self._incoming, []
        for seq in doomed:
            self._deliver_error(seq, exc)
        for request in incoming:
            self._delivery.put(request.request_id, request.on_error, exc)

    @torch.inference_mode()
    def _step(self) -> bool:
        """One model step; False if the model failed (its sequences are ended with the error)."""
        chunks = self.scheduler.schedule()
        with self._lock:
            self._waiting_count = len(self.scheduler.waiting)
        if not chunks:
            return True
        try:
            inputs, order = self.runner.prepare(chunks)
            if self.graphs is not None and self.graphs.fits(inputs):
                logits = self.graphs.run(inputs)
            else:
                logits = self.runner.forward(inputs)
        except Exception as exc:  # e.g. out of memory for activations: end this step's requests, keep serving
            log.exception("a model step failed; ending its %d requests", len(chunks))
            for chunk in chunks:
                self._deliver_error(chunk.seq, exc)
            return False
        self._steps += 1
        self.scheduler.advance(chunks)
        self._sample([c.seq for c in order if c.completes], logits)
        return True

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        if not seqs:
            return
        penalties = [s.request.sampling.repetition_penalty for s in seqs]
        if any(p != 1.0 for p in penalties):
            rows = torch.tensor([s.seen_row for s in seqs], device=self.device)
            history = self._history.index_select(0, rows)[:, :max(len(s.tokens) for s in seqs)]
            logits = penalise_repeats(logits, history, torch.tensor(penalties, device=self.device))
        for j, seq in enumerate(seqs):
            banned = seq.banned_tokens()
            if banned:
                logits[j, banned] = float("-inf")
        tokens: list[int | None] = torch.argmax(logits, dim=-1).tolist()
        for j, seq in enumerate(seqs):
            if not seq.request.sampling.greedy:
                try:
                    tokens[j] = sample_next(logits[j], seq.request.sampling, seq.generator)
                except Exception as exc:  # this request's sampling failed: end it alone
                    log.exception("sampling failed for request %s", seq.request_id)
                    self._deliver_error(seq, exc)
                    tokens[j] = None
        kept = [(seq, token) for seq, token in zip(seqs, tokens, strict=True) if token is not None]
        if not kept:
            return
        self._history[torch.tensor([s.seen_row for s, _ in kept], device=self.device),
                      torch.tensor([len(s.tokens) for s, _ in kept], device=self.device)] = torch.tensor(
            [t for _, t in kept], device=self.device)
        for seq, token in kept:
            seq.tokens.append(token)
            reason = seq.finish_reason()
            self._delivery.put(seq.request_id, seq.request.on_tokens, [token], reason)
            if reason is not None:
                self._completed += 1
                self._finish(seq)


def _generator(sampling: SamplingParams, device: torch.device) -> torch.Generator | None:
    if sampling.greedy or sampling.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(sampling.seed)


