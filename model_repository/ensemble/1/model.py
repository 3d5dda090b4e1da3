"""`ensemble`: the BLS orchestrator that owns each chat request from arrival to its last response.

Like NVIDIA's `tensorrt_llm_bls`, one decoupled Python model reads the request, calls the engine model
over BLS and streams the answer back, with all of a request's state in local variables of the thread
that serves it; unlike Triton's ensemble of preprocessing -> engine -> postprocessing, nothing ties a
response to its stream by the client's request id, which may be missing or shared. Per request:

1. read and validate the inputs, apply the WiNGPT2 template, tokenize (wingpt/orchestrator/chat_request.py);
2. assess clinical red flags (wingpt/safety); a flagged streamed request gets the notice as its first
   response, before any generated text; in notice-only mode (rules: continue_generation false) that is
   the whole answer and the engine is not called;
3. take a place in the orchestrator's waiting line (wingpt/orchestrator/admission.py): at most
   max_batch_size requests run in the engine, the rest wait here, priority triage levels first; when the
   line is full an ordinary newcomer is refused and a priority one sheds the newest ordinary waiting
   request (answered overloaded, before any text); running streams are never cut;
4. call the engine (torch_llm | tensorrt_llm, same tensors) under an id of the orchestrator's own;
5. detokenize incrementally (never splitting a UTF-8 character) and send the text;
6. a cancelled request (client cancel, disconnect, deadline) is found by one timer thread
   (wingpt/orchestrator/cancel_watch.py): it leaves the line, or its engine generation is ended with
   the engine's `stop` input.

The name `ensemble` and the inputs and outputs are those of tensorrtllm_backend's ensemble (plus
`messages` and `triage`), so Triton's generate endpoint, tritonclient and client/ work unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from wingpt.detokenizer import StreamDetokenizer
from wingpt.engine_errors import from_engine
from wingpt.errors import InvalidRequest
from wingpt.orchestrator.admission import (
    ORDINARY,
    OVERLOADED,
    SHED,
    TRIAGE_HEADROOM,
    WITHDRAWN,
    Admission,
    AdmissionStats,
    Intake,
    Ticket,
)
from wingpt.orchestrator.cancel_watch import CancelWatch
from wingpt.orchestrator.chat_request import ChatRequest, Limits, read_chat_request
from wingpt.orchestrator.engine_request import (
    engine_inputs,
    generated_tokens,
    new_engine_id,
    stop_inputs,
)
from wingpt.response_sender import FINAL, STUB, SafeSender, log_info
from wingpt.safety import RulesWatcher
from wingpt.tokenizer import load_tokenizer
from wingpt.triton_io import (
    INTERNAL,
    UNAVAILABLE,
    error_response,
    invalid,
    optional_scalar,
    optional_text,
    optional_texts,
    parameters,
    tensor,
)

log = logging.getLogger("ensemble")


class _Inputs:
    """wingpt.orchestrator.chat_request.Inputs over a Triton request."""

    def __init__(self, request: Any) -> None:
        self._request = request

    def scalar(self, name: str) -> Any:
        return optional_scalar(self._request, name)

    def text(self, name: str) -> str | None:
        return optional_text(self._request, name)

    def texts(self, name: str) -> list[str]:
        return optional_texts(self._request, name)


def _response(text: str, triage: str | None = None) -> pb_utils.InferenceResponse:
    outputs = [tensor("text_output", [[text.encode("utf-8")]], np.object_)]
    if triage is not None:
        outputs.append(tensor("triage", [[triage.encode("utf-8")]], np.object_))
    return pb_utils.InferenceResponse(output_tensors=outputs)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.tok = load_tokenizer(params["tokenizer_dir"] or None)
        self.limits = Limits(
            context_window=int(params["context_window"]),
            max_tokens_default=int(params["max_tokens_default"]),
            max_tokens_limit=int(params["max_tokens_limit"]),
            system_prompt=params.get("system_prompt", ""),
        )
        self.rules = RulesWatcher(params.get("safety_rules") or None)
        self.engine_model = params["engine_model"]
        slots, queue_size = int(params["max_batch_size"]), int(params["max_queue_size"])
        levels = tuple(filter(None, params["priority_levels"].split(",")))
        self.admission = Admission(slots, queue_size, levels, int(params["priority_reserved"]))
        # One thread per running or waiting request, plus a few to read and triage newcomers when the line
        # is full (an emergency among them must be read to shed anyone); beyond that, refused unread.
        self.intake = Intake(slots + queue_size + TRIAGE_HEADROOM)
        self.pool = ThreadPoolExecutor(max_workers=self.intake.capacity, thread_name_prefix="request")
        self.cancel_watch = CancelWatch(float(params["cancel_check_period_ms"]) / 1000)
        self._metrics = _AdmissionMetrics(self.admission)

    def execute(self, requests: list) -> None:
        """Hand each request to a thread of its own and return at once (decoupled: responses go
        through each request's response sender)."""
        for request in requests:
            sender = SafeSender(request.get_response_sender())
            if not self.intake.try_enter():
                message = (f"{OVERLOADED}: {self.intake.capacity} requests in the orchestrator "
                           "(max_batch_size + max_queue_size + room to triage)")
                sender.send(error_response(UNAVAILABLE, message), flags=FINAL)
                continue
            self.pool.submit(self._serve, request, sender)
        return None

    def finalize(self) -> None:
        self._metrics.close()
        self.cancel_watch.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ one request, on its own thread
    def _serve(self, request: Any, sender: Any) -> None:
        start = time.monotonic()
        engine_id = new_engine_id()
        summary: dict[str, Any] = {"finish": "error"}
        try:
            summary = self._answer(request, sender, engine_id)
        except InvalidRequest as exc:
            summary["finish"] = "invalid"
            self._send_last(engine_id, sender, invalid(exc))
        except Exception as exc:  # this request fails alone; the model keeps serving the others
            log.exception("request failed")
            self._send_last(engine_id, sender, error_response(INTERNAL, f"request failed: {type(exc).__name__}"))
        finally:
            self.intake.leave()
            # Metadata only, never text: prompts and answers are patient data.
            fields = " ".join(f"{k}={v}" for k, v in summary.items())
            line = (
                f"request {request.request_id() or '-'}: engine_id={engine_id} {fields} "
                f"total_ms={(time.monotonic() - start) * 1000:.0f}")
            log_info(line)

    def _answer(self, request: Any, sender: Any, engine_id: str) -> dict[str, Any]:
        chat = read_chat_request(_Inputs(request), self.tok, self.limits)
        assessor = self.rules.assessor()
        result = assessor.assess(chat.turns)
        triage: str | None = result.to_json()
        summary: dict[str, Any] = {"triage": result.level, "prompt_tokens": len(chat.prompt_ids)}
        if result.flagged and not assessor.rules.continue_generation:
            summary["finish"] = "notice_only"
            self._send_last(engine_id, sender, _response("", triage))
            return summary
        if chat.stream and result.flagged:
            # The notice before any generated text, and before any wait: it needs no engine.
            sender.send(_response("", triage))
            triage = None
        ticket = self.admission.arrive(result.level)
        summary["priority"] = ORDINARY if ticket is None else ticket.priority
        if ticket is None:
            summary["finish"] = "refused"
            self._send_last(engine_id, sender, error_response(UNAVAILABLE, self._refusal()))
            return summary
        cancelled = threading.Event()
        try:
            self.cancel_watch.watch(engine_id, sender.is_cancelled,
                                    lambda: self._on_cancel(engine_id, ticket, cancelled))
            state = self.admission.wait(ticket)
            if state == SHED:
                summary["finish"] = "shed"
                self._send_last(engine_id, sender, error_response(
                    UNAVAILABLE, f"{OVERLOADED}: this request gave its place in the waiting line to a "
                                 "more urgent one"))
                return summary
            if state == WITHDRAWN or cancelled.is_set():
                summary["finish"] = "cancelled"
                self._send_last(engine_id, sender, None)
                return summary
            return summary | self._generate(chat, engine_id, sender, triage, cancelled)
        finally:
            self.admission.leave(ticket)

    def _refusal(self) -> str:
        stats = self.admission.stats()
        return (f"{OVERLOADED}: {sum(stats.running.values())} requests running and {sum(stats.waiting.values())} "
                "waiting (max_batch_size + max_queue_size)")

    def _on_cancel(self, engine_id: str, ticket: Ticket, cancelled: threading.Event) -> None:
        """The client cancelled (on the cancel-watch thread): a waiting request leaves the line, a running
        one has its engine generation stopped."""
        cancelled.set()
        if not self.admission.withdraw(ticket):
            self._stop_engine(engine_id)

    def _generate(self, chat: ChatRequest, engine_id: str, sender: Any, triage: str | None,
                  cancelled: threading.Event) -> dict[str, Any]:
        """Run the generation and send its text; `triage` (if not sent yet) rides on the first text."""
        detok = StreamDetokenizer(self.tok)
        engine_request = pb_utils.InferenceRequest(
            model_name=self.engine_model,
            request_id=engine_id,
            requested_output_names=["output_ids", "sequence_length"],
            inputs=[tensor(k, v, v.dtype) for k, v in engine_inputs(chat, self.tok, chat.stream).items()],
        )
        answer: list[str] = []
        tokens = 0
        first_text_ms = None
        start = time.monotonic()
        # Not under STUB: a decoupled exec() returns only once the engine's first response is there.
        for response in engine_request.exec(decoupled=True):
            if cancelled.is_set():
                continue  # drain the engine's last response; the client is gone
            if response.has_error():
                # One answer for both engines: a full TensorRT-LLM queue is an overload like torch_llm's.
                failure = from_engine(response.error().message())
                self._send_last(engine_id, sender, error_response(failure.kind, failure.message))
                return {"output_tokens": tokens, "finish": "overloaded" if failure.overloaded else "engine_error"}
            new = generated_tokens(_as_numpy(response, "output_ids"), _as_numpy(response, "sequence_length"),
                                   chat.end_id)
            tokens += len(new)
            text = detok.feed(new)
            if not text:
                continue
            if first_text_ms is None:
                first_text_ms = round((time.monotonic() - start) * 1000)
            if chat.stream:
                sender.send(_response(text, triage))
                triage = None
            else:
                answer.append(text)
        if cancelled.is_set():
            self._send_last(engine_id, sender, None)
            return {"output_tokens": tokens, "finish": "cancelled"}
        answer.append(detok.finish())  # a streamed answer's `answer` holds only this tail
        self._send_last(engine_id, sender, _response("".join(answer), triage))
        finish = "length" if tokens >= chat.max_tokens else "stop"
        return {"output_tokens": tokens, "finish": finish, "first_text_ms": first_text_ms}

    def _send_last(self, engine_id: str, sender: Any, response: Any) -> None:
        """The request's final response (None: only the final flag), after its cancellation watch ends."""
        self.cancel_watch.forget(engine_id)
        try:
            sender.send(response, flags=FINAL)
        except Exception:  # a cancelled request's client may be gone: nothing left to tell it
            log.debug("final response not delivered", exc_info=True)

    def _stop_engine(self, engine_id: str) -> None:
        """End the engine's generation at its next step (the `stop` input of tensorrt_llm, which torch_llm
        declares too), under the orchestrator's own id."""
        stop = pb_utils.InferenceRequest(
            model_name=self.engine_model, request_id=engine_id, requested_output_names=[],
            inputs=[tensor(k, v, v.dtype) for k, v in stop_inputs().items()],
        )
        for response in stop.exec(decoupled=True):
            if response.has_error():
                log.warning("engine stop request failed: %s", response.error().message())


def _as_numpy(response: Any, name: str) -> np.ndarray | None:
    out = pb_utils.get_output_tensor_by_name(response, name)
    return None if out is None else out.as_numpy()




class _AdmissionMetrics:
    """The waiting line on /metrics, published from a snapshot every period (never under the admission
    lock: each set is a round trip to the server). Labels: priority = a priority level or `ordinary`."""

    PERIOD_S = 0.1

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        requests = pb_utils.MetricFamily(
            name="wingpt_orchestrator_requests",
            description="Requests in the orchestrator by priority and state (running: holds an engine slot; "
                        "waiting: in the orchestrator's waiting line)",
            kind=pb_utils.MetricFamily.GAUGE)
        shed = pb_utils.MetricFamily(
            name="wingpt_orchestrator_shed_total",
            description="Waiting requests answered overloaded to make room for a more urgent one, by priority",
            kind=pb_utils.MetricFamily.COUNTER)
        refused = pb_utils.MetricFamily(
            name="wingpt_orchestrator_refused_total",
            description="Requests refused because the waiting line was full, by priority",
            kind=pb_utils.MetricFamily.COUNTER)
        self._families = (requests, shed, refused)  # a family must outlive its metrics
        labels = admission.labels
        self._gauges = {(state, p): requests.Metric(labels={"model": "ensemble", "priority": p, "state": state})
                        for state in ("running", "waiting") for p in labels}
        self._counters = {(kind, p): family.Metric(labels={"model": "ensemble", "priority": p})
                          for kind, family in (("shed", shed), ("refused", refused)) for p in labels}
        self._published = dict.fromkeys(self._counters, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="admission-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(self.PERIOD_S):
            try:
                with STUB:  # metric updates are stub calls too
                    self._publish(self._admission.stats())
            except Exception:  # metrics must never take the orchestrator down
                log.debug("admission metrics not published", exc_info=True)

    def _publish(self, stats: AdmissionStats) -> None:
        for (state, p), gauge in self._gauges.items():
            gauge.set(getattr(stats, state)[p])
        for (kind, p), counter in self._counters.items():
            total = getattr(stats, kind)[p]
            if total > self._published[kind, p]:
                counter.increment(total - self._published[kind, p])
                self._published[kind, p] = total
