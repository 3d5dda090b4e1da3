"""torch_llm: the PyTorch paged-KV engine (wingpt/engine, docs/engine.md), behind tensorrt_llm's tensors.

Decoupled: `execute` only validates and enqueues; the engine's delivery thread streams responses through
each request's response sender, and a request arriving mid-generation joins the running batch.
Engine load is exported in the TensorRT-LLM backend's families, so dashboards and autoscaling work for
both engines: `nv_trt_llm_request_metrics{request_type=...}` and
`nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max|free|used|tokens_per"}`.

Failures follow the engine contract (wingpt/engine/faults.py): a request the engine could not serve
is answered `[INTERNAL]` alone; a broken engine calls `_engine_broken`, which stops this tritonserver
so that its ports close at once and the supervisor (or Kubernetes) restarts it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from wingpt.engine.checkpoint import load_model
from wingpt.engine.engine import PagedEngine
from wingpt.engine.faults import FaultInjection
from wingpt.engine.requests import (
    FINISH_CANCELLED,
    EngineOverloaded,
    EngineStats,
    EngineStopped,
    GenerationRequest,
)
from wingpt.errors import InvalidRequest
from wingpt.response_sender import FINAL, STUB, SafeSender, log_error, log_info
from wingpt.sampling import resolve_sampling
from wingpt.triton_io import (
    INTERNAL,
    UNAVAILABLE,
    error,
    invalid,
    optional_array,
    optional_scalar,
    parameters,
    tensor,
)
from wingpt.word_lists import decode_word_list

log = logging.getLogger("torch_llm")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        device = params["device"]
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch_llm was rendered for a GPU but torch sees no CUDA device")
        model = load_model(params["model_dir"], device, getattr(torch, params["dtype"]))
        self.engine = PagedEngine(
            model,
            max_batch_size=int(params["max_batch_size"]),
            max_queue_size=int(params["max_queue_size"]),
            max_seq_len=int(params["context_window"]),
            max_num_tokens=int(params["max_num_tokens"]),
            kv_block_size=int(params["kv_block_size"]),
            prefix_reuse=params["prefix_reuse"] == "1",
            kv_cache_bytes=int(params["kv_cache_bytes"]),
            kv_cache_free_gpu_mem_fraction=float(params["kv_cache_free_gpu_mem_fraction"]),
            cuda_graphs=device == "cuda" and params["cuda_graph"] == "1",
            on_broken=self._engine_broken,
            faults=FaultInjection.parse(params.get("test_faults", "")),
        )
        self._families: list[object] = []
        # The TensorRT-LLM backend's families and labels, so dashboards and autoscaling work for both engines.
        self._gauges = self._gauge_family(
            "nv_trt_llm_request_metrics", "Engine requests by state", "request_type",
            ("active", "waiting", "max", "completed", "cancelled"))
        self._kv_gauges = self._gauge_family(
            "nv_trt_llm_kv_cache_block_metrics", "KV cache blocks", "kv_cache_block_type",
            ("max", "free", "used", "tokens_per"))
        self._stop_metrics = threading.Event()
        threading.Thread(target=self._publish_metrics, daemon=True).start()
        self.engine.start()

    def _gauge_family(self, name: str, description: str, label: str, kinds: tuple[str, ...]) -> dict[str, object]:
        family = pb_utils.MetricFamily(name=name, description=f"{description} (same family as the TensorRT-LLM "
                                       "backend)", kind=pb_utils.MetricFamily.GAUGE)
        self._families.append(family)  # a family must outlive its metrics
        return {kind: family.Metric(labels={"model": "torch_llm", label: kind}) for kind in kinds}

    def _engine_broken(self, exc: BaseException) -> None:
        """The engine's health hook: its loop cannot continue, so this replica must stop claiming
        readiness. Triton 2.51 keeps /v2/health/ready at 200 with a dead or idle engine stub
        (measured), but on SIGTERM it closes its HTTP and gRPC ports at once and exits after
        unloading; the supervisor restarts it, and in Kubernetes the container exits and is restarted."""
        log_error(f"torch_llm: the engine is broken ({type(exc).__name__}: {exc}); "
                  "stopping tritonserver so that it is restarted")
        os.kill(os.getppid(), signal.SIGTERM)  # the stub's parent is its tritonserver

    def _publish_metrics(self) -> None:
        while not self._stop_metrics.wait(0.2):
            stats = self.engine.stats()
            with STUB:  # metric updates are stub calls (wingpt/response_sender.py)
                self._publish(stats)

    def _publish(self, stats: EngineStats) -> None:
        for kind, value in (("active", stats.active), ("waiting", stats.waiting), ("max", stats.max_batch_size),
                            ("completed", stats.completed), ("cancelled", stats.cancelled)):
            self._gauges[kind].set(value)
        for kind, value in (("max", stats.kv_blocks_max), ("free", stats.kv_blocks_free),
                            ("used", stats.kv_blocks_used), ("tokens_per", stats.kv_tokens_per_block)):
            self._kv_gauges[kind].set(value)

    def execute(self, requests: list) -> None:
        for request in requests:
            sender = SafeSender(request.get_response_sender())
            try:
                if optional_scalar(request, "stop"):
                    self._stop(request.request_id())
                    sender.send(flags=FINAL)
                    continue
                generation = self._generation_request(request, sender)
                if generation.max_new_tokens == 0:  # the safety layer's notice-only answer
                    sender.send(_ResponseStream.response([]), flags=FINAL)
                    continue
                self.engine.submit(generation)
            except InvalidRequest as exc:
                sender.send(invalid(exc), flags=FINAL)
            except EngineOverloaded as exc:
                sender.send(pb_utils.InferenceResponse(error=error(UNAVAILABLE, str(exc))), flags=FINAL)
            except EngineStopped as exc:
                sender.send(pb_utils.InferenceResponse(error=error(UNAVAILABLE, str(exc))), flags=FINAL)
        return None

    def _stop(self, request_id: str) -> None:
        """tensorrt_llm's `stop` input: end the running request with this id. Postprocessing sends it
        when a client cancels through the ensemble, which Triton 2.51 does not pass to a running step."""
        if not request_id:
            raise InvalidRequest("stop", "a stop request needs the request_id of the request to stop")
        self.engine.cancel(request_id)

    def _generation_request(self, request: object, sender: object) -> GenerationRequest:
        ids = optional_array(request, "input_ids")
        if ids is None:
            raise InvalidRequest("input_ids", "is required")
        prompt = [int(t) for t in ids.reshape(-1)]
        length = optional_scalar(request, "input_lengths")
        if length is not None:
            prompt = prompt[: int(length)]
        max_new = optional_scalar(request, "request_output_len")
        if max_new is None or max_new < 0:
            raise InvalidRequest("request_output_len", f"must be >= 0, got {max_new}")
        top_k = optional_scalar(request, "runtime_top_k")
        # Both names TensorRT-LLM's backend has used for the seed (build_engine/pins.py TRTLLM_SEED_INPUTS).
        seed = optional_scalar(request, "seed") or optional_scalar(request, "random_seed")
        sampling = resolve_sampling(
            temperature=optional_scalar(request, "temperature"),
            top_k=top_k,
            top_p=optional_scalar(request, "runtime_top_p"),
            repetition_penalty=optional_scalar(request, "repetition_penalty"),
            seed=seed if seed else None,
        )
        end_id = optional_scalar(request, "end_id")
        streaming = bool(optional_scalar(request, "streaming"))
        request_id = request.request_id() or str(id(request))
        stream = _ResponseStream(sender, streaming, request_id, len(prompt))
        return GenerationRequest(
            request_id=request_id,
            prompt_ids=prompt,
            max_new_tokens=int(max_new),
            sampling=sampling,
            end_id=int(end_id) if end_id is not None else -1,
            on_tokens=stream.on_tokens,
            on_error=stream.on_error,
            stop_sequences=decode_word_list(optional_array(request, "stop_words_list")),
            bad_sequences=decode_word_list(optional_array(request, "bad_words_list")),
            is_cancelled=sender.is_cancelled,
        )

    def finalize(self) -> None:
        self._stop_metrics.set()
        self.engine.shutdown()


class _ResponseStream:
    """Turns engine callbacks into tensorrt_llm-shaped responses: new tokens per response when
    streaming, else one response with the whole output; always closed with the FINAL flag.

    Each request ends with one log line of metadata (id, token counts, finish reason, timings),
    never text: prompts and answers are patient data."""

    def __init__(self, sender: object, streaming: bool, request_id: str, prompt_tokens: int) -> None:
        self.sender = sender
        self.streaming = streaming
        self.tokens: list[int] = []
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.output_tokens = 0
        self.start = time.monotonic()
        self.first_token_s: float | None = None

    def _log_end(self, finish: str) -> None:
        first = "-" if self.first_token_s is None else f"{self.first_token_s * 1000:.0f}"
        log_info(
            f"request {self.request_id}: prompt_tokens={self.prompt_tokens} output_tokens={self.output_tokens} "
            f"finish={finish} first_token_ms={first} total_ms={(time.monotonic() - self.start) * 1000:.0f}")

    @staticmethod
    def response(tokens: list[int]) -> pb_utils.InferenceResponse:
        return pb_utils.InferenceResponse(output_tensors=[
            tensor("output_ids", [[tokens]], np.int32),
            tensor("sequence_length", [[len(tokens)]], np.int32),
        ])

    def on_tokens(self, new: list[int], finish_reason: str | None) -> None:
        if new and self.first_token_s is None:
            self.first_token_s = time.monotonic() - self.start
        self.output_tokens += len(new)
        if finish_reason is not None:
            self._log_end(finish_reason)
        if finish_reason == FINISH_CANCELLED:
            self.sender.send(flags=FINAL)
            return
        if self.streaming:
            if finish_reason is None:
                self.sender.send(self.response(new))
            else:
                self.sender.send(self.response(new), flags=FINAL)
            return
        self.tokens += new
        if finish_reason is not None:
            self.sender.send(self.response(self.tokens), flags=FINAL)

    def on_error(self, exc: Exception) -> None:
        self._log_end(f"error:{type(exc).__name__}")
        kind = UNAVAILABLE if isinstance(exc, EngineStopped) else INTERNAL
        if kind == INTERNAL:
            log.error("generation failed: %s", type(exc).__name__)
        self.sender.send(pb_utils.InferenceResponse(error=error(kind, f"generation failed: {exc}")), flags=FINAL)
