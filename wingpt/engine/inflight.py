"""In-flight (continuous) batching over a transformers causal LM.

One background thread owns the model. Each iteration it (1) retires cancelled requests,
(2) runs one decode step for every running sequence, and (3) prefills waiting requests into free
slots so they join the batch at the next step: a request that arrives mid-generation does not
wait for the batch to drain. Results are pushed to per-request callbacks as tokens are made.

Failures follow the contract of `faults.py`: one request's exception ends that request alone; a
failed decode step ends the requests in it and the engine goes on; an unrecoverable error (or
`max_step_faults` failed steps in a row) stops the engine and calls its `on_broken` hook.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from wingpt.engine.faults import EngineBroken, FaultInjection, OnBroken, RequestFailed, is_unrecoverable
from wingpt.engine.graph_decode import SingleStreamGraph
from wingpt.engine.kv_batch import concat_rows, keep_rows
from wingpt.errors import InvalidRequest
from wingpt.sampling import SamplingParams, apply_repetition_penalty, finite_logits, sample_next

log = logging.getLogger(__name__)

FINISH_STOP = "stop"  # end id or a stop sequence
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"


class EngineOverloaded(RuntimeError):
    """The waiting queue is full: reject now rather than let latency grow without bound."""


class EngineStopped(RuntimeError):
    """The engine is shutting down or is broken (its replica is restarting)."""


@dataclass
class GenerationRequest:
    """One generation. `on_tokens(new_ids, finish_reason)` is called from the engine thread;
    finish_reason is None until the last call. `on_error` ends the request with an error."""

    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    end_id: int
    on_tokens: Callable[[list[int], str | None], None]
    on_error: Callable[[Exception], None]
    stop_sequences: list[list[int]] = field(default_factory=list)
    bad_sequences: list[list[int]] = field(default_factory=list)
    is_cancelled: Callable[[], bool] = lambda: False
    arrival: float = field(default_factory=time.monotonic)


@dataclass
class _Row:
    request: GenerationRequest
    generated: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    ended: bool = False  # its request has had its last callback (finished or failed)


@dataclass
class EngineStats:
    active: int
    waiting: int
    completed: int
    cancelled: int
    max_batch_size: int
    single_stream_steps: int = 0  # decode steps run in the fixed-shape cache (a CUDA graph on GPUs)


class InflightBatchingEngine:
    """Serves many concurrent generations from one model with a shared, left-padded KV cache."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        max_batch_size: int,
        max_queue_size: int,
        max_seq_len: int,
        max_prefill_tokens: int = 8192,
        single_stream_graph: bool = False,
        max_step_faults: int = 3,
        on_broken: OnBroken | None = None,
        faults: FaultInjection | None = None,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab = model.config.vocab_size
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_seq_len = max_seq_len
        self.max_prefill_tokens = max_prefill_tokens
        self.max_step_faults = max_step_faults
        self._on_broken = on_broken
        self._faults = faults  # test builds only (faults.FaultInjection)
        # Failed steps in a row, by kind: only a successful step of the same kind shows that it works again
        # (prefills succeeding between decode steps that keep running out of memory are no recovery).
        self._step_faults = {"decode": 0, "prefill": 0}
        self._waiting: collections.deque[GenerationRequest] = collections.deque()
        self._cancel_ids: set[str] = set()
        self._lock = threading.Condition()
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self._seen = torch.zeros(0, self.vocab, dtype=torch.bool, device=self.device)
        self._completed = 0
        self._cancelled = 0
        self._running = False
        self._thread: threading.Thread | None = None
        # A lone sequence decodes in a fixed-shape cache, captured as a CUDA graph on a GPU (graph_decode.py).
        self._graph = (SingleStreamGraph(model, max_seq_len, capture=self.device.type == "cuda")
                       if single_stream_graph else None)
        self._graph_active = False
        self._single_stream_steps = 0

    # ----------------------------------------------------------------- public API (any thread)
    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="inflight-engine", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        total = len(request.prompt_ids) + request.max_new_tokens
        if total > self.max_seq_len:
            raise InvalidRequest(
                "max_tokens",
                f"prompt ({len(request.prompt_ids)} tokens) + max_tokens ({request.max_new_tokens}) "
                f"exceeds the context window of {self.max_seq_len} tokens",
            )
        if not request.prompt_ids:
            raise InvalidRequest("input_ids", "the prompt is empty")
        # Ids outside the vocabulary would index out of range: on a GPU a device-side assert, which
        # no later CUDA call survives, so they are refused before they reach the model.
        for name, ids in (("input_ids", request.prompt_ids),
                          ("bad_words_list", [t for bad in request.bad_sequences for t in bad])):
            if any(not 0 <= t < self.vocab for t in ids):
                raise InvalidRequest(name, f"token ids must be in [0, {self.vocab})")
        with self._lock:
            if not self._running:
                raise EngineStopped("the engine is not running")
            # Free batch slots are taken at the next step: only requests beyond them are queued.
            if len(self._waiting) >= self.max_queue_size + max(0, self.max_batch_size - len(self._rows)):
                raise EngineOverloaded(
                    f"server overloaded: {len(self._waiting)} requests already waiting (max_queue_size)"
                )
            self._waiting.append(request)
            self._lock.notify()

    def cancel(self, request_id: str) -> None:
        with self._lock:
            self._cancel_ids.add(request_id)
            self._lock.notify()

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(len(self._rows), len(self._waiting), self._completed, self._cancelled,
                               self.max_batch_size, self._single_stream_steps)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the loop; requests still running or waiting end with EngineStopped."""
        with self._lock:
            self._running = False
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ----------------------------------------------------------------- engine thread
    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while self._running and not self._rows and not self._waiting and not self._cancel_ids:
                        self._lock.wait()
                    if not self._running:
                        break
                    cancel_ids, self._cancel_ids = self._cancel_ids, set()
                self._retire_cancelled(cancel_ids)
                if self._rows:
                    self._run_decode()
                self._admit()
        except Exception as exc:  # EngineBroken, or a bug in the loop itself: nothing can be served now
            log.exception("engine broken: stopping")
            self._fail_all(EngineStopped(f"the engine failed and its server is restarting ({exc})"))
            if self._on_broken is not None:
                self._on_broken(exc)
            return
        self._fail_all(EngineStopped("the engine is shutting down"))

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            self._running = False
            doomed = [row.request for row in self._rows if not row.ended] + list(self._waiting)
            self._rows, self._waiting = [], collections.deque()
        for request in doomed:
            _end_with_error(request, exc)

    def _fail_request(self, request: GenerationRequest, exc: BaseException) -> None:
        """This request's fault: end it alone (the model answers INTERNAL); if the error means the
        device itself is gone, the engine is broken too."""
        log.error("request %s failed: %s: %s", request.request_id, type(exc).__name__, exc)
        _end_with_error(request, RequestFailed(f"{type(exc).__name__}: {exc}"))
        if is_unrecoverable(exc):
            raise EngineBroken(f"unrecoverable error while serving a request: {exc}") from exc

    def _step_fault(self, exc: BaseException, requests: list[GenerationRequest], kind: str) -> None:
        """A failed step that no single request is to blame for: its requests end, the engine goes on,
        unless it is unrecoverable or has happened `max_step_faults` times in a row."""
        self._step_faults[kind] += 1
        in_a_row = self._step_faults[kind]
        log.error("engine %s step failed (%d in a row): %s: %s; ending its %d request(s)",
                  kind, in_a_row, type(exc).__name__, exc, len(requests))
        for request in requests:
            _end_with_error(request, RequestFailed(f"the engine step failed: {type(exc).__name__}: {exc}"))
        if is_unrecoverable(exc) or in_a_row >= self.max_step_faults:
            raise EngineBroken(f"{in_a_row} {kind} step(s) in a row failed, the last with "
                               f"{type(exc).__name__}: {exc}") from exc

    def _run_decode(self) -> None:
        try:
            self._decode_step()
        except Exception as exc:
            requests = [row.request for row in self._rows if not row.ended]
            self._drop_rows(set(range(len(self._rows))))  # their shared cache may be half-updated
            self._step_fault(exc, requests, "decode")
            return
        self._step_faults["decode"] = 0

    def _retire_cancelled(self, cancel_ids: set[str]) -> None:
        def cancelled(r: GenerationRequest) -> bool:
            return r.request_id in cancel_ids or r.is_cancelled()

        with self._lock:
            dropped = [r for r in self._waiting if cancelled(r)]
            self._waiting = collections.deque(r for r in self._waiting if not cancelled(r))
        done = [i for i, row in enumerate(self._rows) if cancelled(row.request)]
        for request in dropped + [self._rows[i].request for i in done]:
            try:
                request.on_tokens([], FINISH_CANCELLED)
            except Exception as exc:  # a failing callback is its request's fault, and it is ending anyway
                log.error("request %s: cancel callback failed: %s", request.request_id, type(exc).__name__)
        self._cancelled += len(dropped) + len(done)
        self._drop_rows(set(done))

    def _take_waiting(self) -> list[GenerationRequest]:
        taken: list[GenerationRequest] = []
        budget = self.max_prefill_tokens
        with self._lock:
            while self._waiting and len(self._rows) + len(taken) < self.max_batch_size:
                size = len(self._waiting[0].prompt_ids)
                if taken and size > budget:
                    break
                taken.append(self._waiting.popleft())
                budget -= size
        return taken

    def _admit(self) -> None:
        """Prefill waiting requests together; if that fails, each alone, so a request whose own
        prefill fails ends alone (out-of-memory counts as a step fault: it is the engine's)."""
        new = self._take_waiting()
        if not new:
            return
        try:
            logits = self._prefill(new)
        except Exception as exc:
            if len(new) > 1 and not is_unrecoverable(exc):
                for request in new:
                    self._admit_alone(request)
                return
            self._prefill_failed(exc, new[0])
            return
        self._step_faults["prefill"] = 0
        self._emit_first(logits)

    def _admit_alone(self, request: GenerationRequest) -> None:
        try:
            logits = self._prefill([request])
        except Exception as exc:
            self._prefill_failed(exc, request)
            return
        self._step_faults["prefill"] = 0
        self._emit_first(logits)

    def _emit_first(self, logits: torch.Tensor) -> None:
        """The first token of the rows just joined (the last len(logits) rows)."""
        joined = range(len(self._rows) - len(logits), len(self._rows))
        try:
            self._sample_and_emit(logits, joined)
        except Exception as exc:
            requests = [self._rows[i].request for i in joined if not self._rows[i].ended]
            self._drop_rows(set(joined))
            self._step_fault(exc, requests, "prefill")

    def _prefill_failed(self, exc: BaseException, request: GenerationRequest) -> None:
        if isinstance(exc, torch.OutOfMemoryError):
            self._step_fault(exc, [request], "prefill")
        else:
            self._fail_request(request, exc)

    @torch.inference_mode()
    def _prefill(self, new: list[GenerationRequest]) -> torch.Tensor:
        """Run the new prompts and join them to the batch; their last logits [len(new), V]."""
        width = max(len(r.prompt_ids) for r in new)
        # Left padding is masked out, so any valid id will do; not end_id, which may be -1 ("ignore EOS").
        ids = torch.zeros((len(new), width), dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, r in enumerate(new):
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        seen = torch.zeros(len(new), self.vocab, dtype=torch.bool, device=self.device)
        seen.scatter_(1, ids, mask.bool())
        rows = [_Row(r, generator=self._generator(r.sampling)) for r in new]
        self._leave_graph()
        if self._cache is None or not self._rows:
            self._cache, self._mask, self._seen = cache, mask, seen
            self._rows = rows
        else:
            self._mask = concat_rows(self._cache, self._mask, cache, mask)
            self._seen = torch.cat([self._seen, seen])
            self._rows = self._rows + rows
        return out.logits[:, -1, :]

    @torch.inference_mode()
    def _decode_step(self) -> None:
        if self._graph is not None and len(self._rows) == 1 and not self._waiting and self._graph_room():
            if not self._graph_active:
                self._graph.load(self._cache, self._mask[0])
                self._graph_active = True
            self._single_stream_steps += 1
            self._sample_and_emit(self._graph.step(self._rows[0].generated[-1]), range(1))
            return
        self._leave_graph()
        last = torch.tensor([row.generated[-1] for row in self._rows], device=self.device).unsqueeze(1)
        positions = self._mask.sum(1, keepdim=True)
        self._mask = torch.cat([self._mask, torch.ones_like(last)], dim=1)
        out = self.model(input_ids=last, attention_mask=self._mask, position_ids=positions,
                         past_key_values=self._cache, use_cache=True)
        self._sample_and_emit(out.logits[:, -1, :], range(len(self._rows)))

    def _graph_room(self) -> bool:
        length = self._graph.length if self._graph_active else int(self._mask.shape[1])
        return length < self._graph.max_len

    def _leave_graph(self) -> None:
        """Back to the batch cache: another request is joining, or the sequence no longer fits."""
        if self._graph_active:
            self._graph_active = False
            if self._rows:
                self._cache, self._mask = self._graph.unload()

    def _generator(self, sampling: SamplingParams) -> torch.Generator | None:
        if sampling.greedy or sampling.seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(sampling.seed)

    @torch.inference_mode()
    def _sample_and_emit(self, logits: torch.Tensor, row_range: range) -> None:
        """Batched penalty and argmax, then per request (isolated: an exception ends that request
        alone) its token, its finish check and its callback."""
        rows = [self._rows[i] for i in row_range]
        if self._faults is not None:
            self._faults.before_step([row.request.sampling.seed for row in rows])
        index = torch.tensor(list(row_range), device=self.device)
        penalties = torch.tensor([r.request.sampling.repetition_penalty for r in rows], device=self.device)
        logits = apply_repetition_penalty(finite_logits(logits), self._seen.index_select(0, index), penalties)
        for j, row in enumerate(rows):
            for banned in _banned_tokens(row):
                logits[j, banned] = float("-inf")
        best, tokens = logits.max(dim=-1)
        tokens = tokens.masked_fill(~best.isfinite(), -1).tolist()  # -1: no possible token; one device sync
        finished: set[int] = set()
        emitted: list[tuple[int, int]] = []  # (row index, token) for the `seen` update
        for j, (i, row) in enumerate(zip(row_range, rows, strict=True)):
            try:
                if tokens[j] < 0:
                    raise ValueError("the model gave no finite logit for this sequence")
                if self._faults is not None:
                    self._faults.before_token(row.request.sampling.seed)
                token = tokens[j] if row.request.sampling.greedy else sample_next(
                    logits[j], row.request.sampling, row.generator)
                row.generated.append(token)
                emitted.append((i, token))
                reason = _finish_reason(row, token)
                row.request.on_tokens([token], reason)
            except Exception as exc:
                finished.add(i)
                row.ended = True
                self._fail_request(row.request, exc)
                continue
            if reason is not None:
                finished.add(i)
                row.ended = True
                self._completed += 1
        if emitted:
            at = torch.tensor(emitted, device=self.device)
            self._seen[at[:, 0], at[:, 1]] = True
        self._drop_rows(finished)

    def _drop_rows(self, indices: set[int]) -> None:
        if not indices:
            return
        keep = [i for i in range(len(self._rows)) if i not in indices]
        with self._lock:
            self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._graph_active = False
            self._cache, self._mask = None, self._mask[:0, :0]
            self._seen = self._seen[:0]
            return
        keep_t = torch.tensor(keep, device=self.device)
        self._mask = keep_rows(self._cache, self._mask, keep_t)
        self._seen = self._seen.index_select(0, keep_t)


def _end_with_error(request: GenerationRequest, exc: Exception) -> None:
    """A request's on_error that itself fails must not stop the engine from ending the others."""
    try:
        request.on_error(exc)
    except Exception as callback_exc:
        log.error("request %s: error callback failed: %s", request.request_id, type(callback_exc).__name__)


def _finish_reason(row: _Row, token: int) -> str | None:
    request = row.request
    if token == request.end_id:
        return FINISH_STOP
    for stop in request.stop_sequences:
        if stop and row.generated[-len(stop):] == stop:
            return FINISH_STOP
    if len(row.generated) >= request.max_new_tokens:
        return FINISH_LENGTH
    return None


def _banned_tokens(row: _Row) -> list[int]:
    """Last tokens of bad sequences whose prefix the output currently ends with."""
    banned = []
    for bad in row.request.bad_sequences:
        prefix = bad[:-1]
        if not prefix or row.generated[-len(prefix):] == prefix:
            banned.append(bad[-1])
    return banned
