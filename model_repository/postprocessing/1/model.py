"""Postprocessing: token ids -> text, incrementally per stream, never splitting a UTF-8 character.

Triton's ensemble forwards the client's request id to every step, and that id is the only thing
that ties an engine response to its stream (a step may not mix tensors from the decoupled engine
with tensors from preprocessing). Clients must therefore give each in-flight request a unique id,
as `client/` does; a request without an id is decoded response by response, so a character split
across two responses shows as U+FFFD, and gets no triage.

A stream's first response also carries `TRIAGE`, the safety layer's flags that preprocessing left
for this request id (wingpt/safety/handoff.py).

The same id carries cancellation back to the engine: Triton 2.51's ensemble does not cancel a step
that is already running (the engine's generation), only the steps it schedules afterwards, which
arrive here marked cancelled. This model then sends the engine a `stop` request for that id (the
tensorrt_llm backend's input of that name), so the slot is freed at the engine's next step.
A cancelled step is answered with empty text, not an error: Triton 2.51's ensemble stops reading
a running step's responses once any step failed, so it would never see the engine's final
response, and the ensemble request would stay in flight for ever (SIGTERM would wait it out).
"""

from __future__ import annotations

import collections
import logging
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from wingpt.detokenizer import StreamStore
from wingpt.safety.handoff import TriageHandoff
from wingpt.tokenizer import load_tokenizer
from wingpt.triton_io import parameters, tensor

log = logging.getLogger("postprocessing")
REMEMBER_STOPPED = 1024  # ids already stopped: later responses of the same stream send no second stop


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.store = StreamStore(load_tokenizer(params["tokenizer_dir"] or None), ttl_s=float(params["stream_ttl_s"]))
        self.handoff = TriageHandoff(params["triage_handoff_dir"])
        self.engine_model = params["engine_model"]
        self.stopped: collections.OrderedDict[str, None] = collections.OrderedDict()

    def execute(self, requests: list) -> list:
        now = time.monotonic()
        responses = []
        for request in requests:
            if request.is_cancelled():
                self._stop_engine(request.request_id())
                self.handoff.take(request.request_id())  # nobody will read it now
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor("OUTPUT", [[b""]], np.object_)]))
                continue
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
            key = request.request_id()
            triage = None if key in self.store else self.handoff.take(key)
            texts = []
            for row in range(tokens.shape[0]):  # one row per batched request; beam width is 1
                ids = tokens[row].reshape(-1)[: int(lengths[row].reshape(-1)[0])].tolist()
                texts.append(self.store.feed(key, ids, now).encode("utf-8"))
            outputs = [tensor("OUTPUT", [[t] for t in texts], np.object_)]
            if triage is not None:
                outputs.append(tensor("TRIAGE", [[triage.encode("utf-8")]] * len(texts), np.object_))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses

    def _stop_engine(self, request_id: str) -> None:
        """A `stop` request to the engine (once per stream); it answers at once with an empty final response."""
        if not request_id or request_id in self.stopped:
            return
        self.stopped[request_id] = None
        if len(self.stopped) > REMEMBER_STOPPED:
            self.stopped.popitem(last=False)
        stop = pb_utils.InferenceRequest(
            model_name=self.engine_model,
            request_id=request_id,
            requested_output_names=[],
            inputs=[
                tensor("input_ids", [[0]], np.int32),
                tensor("input_lengths", [[1]], np.int32),
                tensor("request_output_len", [[1]], np.int32),
                tensor("stop", [[True]], np.bool_),
            ],
        )
        for response in stop.exec(decoupled=True):
            if response.has_error():
                log.warning("engine stop request failed: %s", response.error().message())
