"""The PyTorch engine: in-flight batching over a paged KV cache with a memory budget.

One step thread owns the model. Each iteration it takes new and cancelled requests, asks the scheduler
for the step's chunks (scheduler.py: token budget, free blocks, preemption), runs them (model_runner.py),
samples one token for every sequence whose tokens are all computed, and hands the tokens to the delivery
thread (delivery.py), which calls the requests' callbacks.

Overlap (on by default on a GPU): the host does not wait for a step's tokens before launching the next one.
When every sequence of a step decodes greedily without bad words, its tokens stay on the device (written into
the penalty's history there), each sequence gets a placeholder (model_runner.PENDING_TOKEN), and the loop
goes on: the next step is scheduled, prepared and launched, its input tokens filled in from the samples on
the device, and only then are the previous step's tokens read, checked for stops and delivered, while the
GPU runs. Nothing about a step depends on a token's value except its input, so the tokens are exactly those
of the synchronous loop; a sequence that turns out to have stopped costs one wasted row in the step already
launched. A step that needs its tokens on the host (sampling with a seed or top-p, bad words), or might
preempt (fewer free blocks than running sequences), reads them first; so does a step slow to launch (one
with a prefill, or a graph's first capture), which would otherwise hold the finished tokens back.

Why not transformers' continuous-batching manager: see docs/engine.md (it cannot apply the model card's
repetition penalty, per-request seeds or bad words, and its extension point differs between the transformers
versions we run).

Failures follow the contract of faults.py (issue 15): a request whose own work fails (its sampling, its
callbacks) ends alone with RequestFailed; a failed model step ends the requests in it with RequestFailed
and the engine goes on; an unrecoverable error, or `max_step_faults` failed steps of one kind (decode-only
or with prefill) in a row, breaks the engine: it ends everyone with EngineStopped, reports
`stats().healthy == False` and calls its `on_broken` hook once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch

from wingpt.engine.block_manager import BlockManager
from wingpt.engine.cuda_graphs import DecodeGraphs
from wingpt.engine.delivery import CancellationPoller, Delivery
from wingpt.engine.faults import EngineBroken, FaultInjection, OnBroken, RequestFailed, is_unrecoverable
from wingpt.engine.model_runner import PENDING_TOKEN, ModelRunner, StepInputs, kv_bytes_per_token, upload
from wingpt.engine.requests import FINISH_CANCELLED, EngineOverloaded, EngineStats, EngineStopped, GenerationRequest
from wingpt.engine.scheduler import Scheduler
from wingpt.engine.sequence import Sequence, Status
from wingpt.errors import InvalidRequest
from wingpt.sampling import SamplingParams, finite_logits, penalise_repeats, sample_next

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
        return max(1, -(-fallback_tokens // block_size))
    return max(1, cache_bytes // per_block)


@dataclass
class _Sampled:
    """One sequence's token in a step whose samples are still on the device."""

    seq: Sequence  # its placeholder is its last token, its row in the samples `seq.pending`
    ended: bool  # the token is its last by length: it left the batch already and is delivered when read


@dataclass
class _Pending:
    """A step's samples, read after the next step is launched."""

    sampled: list[_Sampled]
    tokens: torch.Tensor  # [n] on the device
    host: torch.Tensor  # [n] copied to the host, valid once `ready` has passed
    ready: torch.cuda.Event | None


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
        prefix_reuse: bool = True,
        kv_cache_bytes: int = 0,
        kv_cache_free_gpu_mem_fraction: float = DEFAULT_GPU_MEM_FRACTION,
        max_step_faults: int = 3,
        cuda_graphs: bool = False,
        overlap: bool | None = None,
        on_broken: OnBroken | None = None,
        faults: FaultInjection | None = None,
    ) -> None:
        self.device = next(model.parameters()).device
        self.vocab = model.config.vocab_size
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_seq_len = max_seq_len
        self.max_step_faults = max_step_faults
        # Launch step N+1 before reading step N's tokens (module docstring); on a CPU each call runs to its
        # end, so there is nothing to overlap and a token would only arrive a step later.
        self.overlap = self.device.type == "cuda" if overlap is None else overlap
        self._pending: _Pending | None = None
        self._overlapped = 0
        self._on_broken = on_broken
        self._faults = faults  # test builds only (faults.FaultInjection)
        # Failed steps in a row, by kind: a succeeding prefill step is no sign that decode steps work again.
        self._step_faults = {"decode": 0, "prefill": 0}
        num_blocks = kv_cache_blocks(model, kv_block_size, cache_bytes=kv_cache_bytes,
                                     free_gpu_mem_fraction=kv_cache_free_gpu_mem_fraction,
                                     fallback_tokens=max_batch_size * max_seq_len)
        self.blocks = BlockManager(num_blocks, kv_block_size, prefix_reuse)
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
        self._drop_ids: set[str] = set()  # requests already ended by the delivery thread (a callback raised)
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
        self._delivery = Delivery(on_failure=self._drop)
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
        # Ids outside the vocabulary would index out of range: on a GPU a device-side assert, which no
        # later CUDA call survives, so they are refused before they reach the model.
        for name, ids in (("input_ids", request.prompt_ids),
                          ("bad_words_list", [t for bad in request.bad_sequences for t in bad])):
            if any(not 0 <= t < self.vocab for t in ids):
                raise InvalidRequest(name, f"token ids must be in [0, {self.vocab})")
        with self._lock:
            if not self._running:
                raise EngineStopped("the engine is not running")
            # Free batch slots are taken at the next step: only requests beyond them are queued.
            free_slots = max(0, self.max_batch_size - len(self.scheduler.running))
            if self._waiting_count + len(self._incoming) >= self.max_queue_size + free_slots:
                raise EngineOverloaded(
                    f"server overloaded: {self._waiting_count + len(self._incoming)} requests already waiting "
                    "(max_queue_size)")
            self._incoming.append(request)
            self._lock.notify()

    def cancel(self, request_id: str) -> None:
        with self._lock:
            self._cancel_ids.add(request_id)
            self._lock.notify()

    def _drop(self, request_id: str) -> None:
        with self._lock:
            self._drop_ids.add(request_id)
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
                graph_steps=self.graphs.replays if self.graphs is not None else 0,
                overlapped_steps=self._overlapped)

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
        try:
            while True:
                with self._lock:
                    while (self._running and not self._live and not self._incoming and not self._cancel_ids
                           and not self._drop_ids and self._pending is None):
                        self._lock.wait()
                    if not self._running:
                        break
                    incoming, self._incoming = self._incoming, []
                    self._waiting_count += len(incoming)  # still counted against max_queue_size
                    cancel_ids, self._cancel_ids = self._cancel_ids, set()
                    drop_ids, self._drop_ids = self._drop_ids, set()
                for request in incoming:
                    self._add(request)
                self._retire(cancel_ids, notify=True)
                self._retire(drop_ids, notify=False)
                self._step()
            self._read_pending()  # tokens already made still reach their requests
        except Exception as exc:  # EngineBroken, or a bug in the loop itself: nothing can be served now
            log.exception("engine broken: stopping")
            self._healthy = False
            self._fail_all(EngineStopped(f"the engine failed and its server is restarting ({exc})"))
            if self._on_broken is not None:
                self._on_broken(exc)
            return
        self._fail_all(EngineStopped("the engine is shutting down"))

    def _add(self, request: GenerationRequest) -> None:
        if not self._free_rows:  # cannot happen while submit counts the queue; refuse rather than crash
            self._delivery.error(request, EngineOverloaded("server overloaded: no free sequence slot"))
            return
        seq = Sequence(request, list(request.prompt_ids), len(request.prompt_ids),
                       generator=_generator(request.sampling, self.device))
        seq.seen_row = self._free_rows.pop()
        row = self._history[seq.seen_row]
        row.fill_(seq.tokens[0])
        row[:len(seq.tokens)] = upload(seq.tokens, torch.long, self.device)
        self.scheduler.add(seq)
        with self._lock:
            self._live.setdefault(request.request_id, []).append(seq)
            self._waiting_count = len(self.scheduler.waiting)

    def _finish(self, seq: Sequence) -> None:
        if seq.status is Status.FINISHED:  # a last token delivered after its sequence left the batch
            return
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
        self._delivery.error(seq.request, exc)

    def _fail_request(self, seq: Sequence, exc: Exception) -> None:
        """This request's fault: end it alone; if the error means the device is gone, the engine is broken."""
        log.error("request %s failed: %s: %s", seq.request_id, type(exc).__name__, exc)
        self._deliver_error(seq, RequestFailed(f"{type(exc).__name__}: {exc}"))
        if is_unrecoverable(exc):
            raise EngineBroken(f"unrecoverable error while serving a request: {exc}") from exc

    def _retire(self, request_ids: set[str], notify: bool) -> None:
        """End these requests: cancelled (told so) or already ended by the delivery thread (silently)."""
        for request_id in request_ids:
            with self._lock:
                seqs = list(self._live.get(request_id, []))
            for seq in seqs:
                self._finish(seq)
                if notify:
                    self._cancelled += 1
                    self._delivery.tokens(seq.request, [], FINISH_CANCELLED)

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            self._running = False
            doomed = [seq for seqs in self._live.values() for seq in seqs]
            incoming, self._incoming = self._incoming, []
        if self._pending is not None:  # last tokens not yet read: those requests are owed an ending too
            doomed += [s.seq for s in self._pending.sampled if s.ended]
            self._pending = None
        for seq in doomed:
            self._deliver_error(seq, exc)
        for request in incoming:
            self._delivery.error(request, exc)

    @torch.inference_mode()
    def _step(self) -> None:
        """One model step over the scheduler's chunks, then sampling for the sequences it completes; the
        previous step's tokens are read once this one is launched (overlap)."""
        if self._pending is not None and self.blocks.num_free < len(self.scheduler.running):
            self._read_pending()  # the schedule may preempt, and a preempted sequence is recomputed from its tokens
        chunks = self.scheduler.schedule()
        with self._lock:
            self._waiting_count = len(self.scheduler.waiting)
        if not chunks:
            self._read_pending()
            return
        kind = "decode" if all(c.length == 1 for c in chunks) else "prefill"
        try:
            if self._faults is not None:
                self._read_pending()  # a held engine (hold:<path>) has delivered every token it made
                self._faults.before_step([c.seq.request.sampling.seed for c in chunks])
            inputs, order = self.runner.prepare(chunks, self._pending.tokens if self._pending else None)
            graph = self.graphs is not None and self.graphs.fits(inputs)
            if inputs.prefills or (graph and self.graphs.will_capture(inputs)):
                # Launching this step takes the host long (an eager prefill, a graph's first capture): the tokens
                # already made go out first instead of waiting for it (at 128 streams that was TTFT p95 +30 %).
                self._read_pending()
            logits = self.graphs.run(inputs) if graph else self.runner.forward(inputs)
        except Exception as exc:
            self._read_pending()  # some of the step's sequences may have ended with that step's tokens
            self._step_fault(exc, [c.seq for c in chunks if c.seq.status is not Status.FINISHED], kind)
            return
        self._step_faults[kind] = 0
        self._steps += 1
        self.scheduler.advance(chunks)
        if self._pending is not None:
            self._overlapped += 1
            self._read_pending()
        self._sample([c.seq for c in order if c.completes], logits, inputs)

    def _step_fault(self, exc: Exception, seqs: list[Sequence], kind: str) -> None:
        """A failed step no single request is to blame for (e.g. out of memory for activations): its
        requests end, the engine goes on, unless the error is unrecoverable or keeps happening."""
        if isinstance(exc, EngineBroken):
            raise exc
        self._step_faults[kind] += 1
        in_a_row = self._step_faults[kind]
        log.error("engine %s step failed (%d in a row): %s: %s; ending its %d request(s)",
                  kind, in_a_row, type(exc).__name__, exc, len(seqs))
        for seq in seqs:
            self._deliver_error(seq, RequestFailed(f"the engine step failed: {type(exc).__name__}: {exc}"))
        if is_unrecoverable(exc) or in_a_row >= self.max_step_faults:
            raise EngineBroken(f"{in_a_row} {kind} step(s) in a row failed, the last with "
                               f"{type(exc).__name__}: {exc}") from exc

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor, inputs: StepInputs) -> None:
        """Next tokens for `seqs` (logits rows in order); a sequence that ended meanwhile is skipped."""
        if not seqs:
            return
        logits = finite_logits(logits)
        penalties = [s.request.sampling.repetition_penalty for s in seqs]
        if any(p != 1.0 for p in penalties):
            history = self._history.index_select(0, inputs.sample_rows)[:, :max(len(s.tokens) for s in seqs)]
            logits = penalise_repeats(logits, history, upload(penalties, torch.float32, self.device))
        if self.overlap and all(s.request.sampling.greedy and not s.request.bad_sequences for s in seqs):
            tokens = torch.argmax(logits, dim=-1)
            self._history[inputs.sample_rows, inputs.sample_cols] = tokens
            self._pending = self._defer(seqs, tokens)
            return
        for j, seq in enumerate(seqs):
            banned = seq.banned_tokens()
            if banned:
                logits[j, banned] = float("-inf")
        tokens = torch.argmax(logits, dim=-1).tolist()
        kept = []
        for j, seq in enumerate(seqs):
            if seq.status is Status.FINISHED:
                continue
            try:
                if self._faults is not None:
                    self._faults.before_token(seq.request.sampling.seed)
                if not seq.request.sampling.greedy:
                    tokens[j] = sample_next(logits[j], seq.request.sampling, seq.generator)
            except Exception as exc:  # this request's own fault: it ends alone
                self._fail_request(seq, exc)
                continue
            seq.tokens.append(tokens[j])
            kept.append(seq)
        self._history[inputs.sample_rows, inputs.sample_cols] = upload(tokens, torch.long, self.device)
        self._deliver(kept)

    def _defer(self, seqs: list[Sequence], tokens: torch.Tensor) -> _Pending:
        """Placeholders for tokens still on the device; a sequence at its length limit leaves the batch now."""
        sampled = []
        for j, seq in enumerate(seqs):
            if seq.status is Status.FINISHED:  # ended before this step's token was read
                continue
            seq.tokens.append(PENDING_TOKEN)
            seq.pending = j
            ended = len(seq.tokens) - seq.prompt_len >= seq.request.max_new_tokens
            sampled.append(_Sampled(seq, ended))
            if ended:
                self._finish(seq)
        if tokens.device.type != "cuda":
            return _Pending(sampled, tokens, tokens, None)
        host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
        host.copy_(tokens, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return _Pending(sampled, tokens, host, ready)

    def _read_pending(self) -> None:
        """Wait for the deferred step's tokens, put them in place of their placeholders and deliver them."""
        pending = self._pending
        if pending is None:
            return
        if pending.ready is not None:
            pending.ready.synchronize()
        values = pending.host.tolist()
        self._pending = None
        kept = []
        for item in pending.sampled:
            seq = item.seq
            if seq.status is Status.FINISHED and not item.ended:
                continue  # it ended (cancelled, failed) while its token was on the device
            seq.tokens[-1] = values[seq.pending]
            seq.pending = -1
            try:
                if self._faults is not None:
                    self._faults.before_token(seq.request.sampling.seed)
            except Exception as exc:  # this request's own fault: it ends alone
                self._fail_request(seq, exc)
                continue
            kept.append(seq)
        self._deliver(kept)

    def _deliver(self, seqs: list[Sequence]) -> None:
        """Each sequence's newest token to its request; a sequence it ends leaves the batch."""
        delivered = []
        for seq in seqs:
            reason = seq.finish_reason()
            delivered.append((seq.request, [seq.tokens[-1]], reason))
            if reason is not None:
                self._completed += 1
                self._finish(seq)
        self._delivery.step_tokens(delivered)


def _generator(sampling: SamplingParams, device: torch.device) -> torch.Generator | None:
    if sampling.greedy or sampling.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(sampling.seed)


