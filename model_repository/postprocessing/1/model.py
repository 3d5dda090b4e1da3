"""Postprocessing: token ids -> text, incrementally per stream, never splitting a UTF-8 character.

Triton's ensemble forwards the client's request id to every step, and that id is the only thing
that ties an engine response to its stream (a step may not mix tensors from the decoupled engine
with tensors from preprocessing). Clients must therefore give each in-flight request a unique id,
as `client/` does; a request without an id is decoded response by response, so a character split
across two responses shows as U+FFFD, and gets no triage.

A stream's first response also carries `TRIAGE`, the safety layer's flags that preprocessing left
for this request id (wingpt/safety/handoff.py).
"""

from __future__ import annotations

import time

import numpy as np
import triton_python_backend_utils as pb_utils

from wingpt.detokenizer import StreamStore
from wingpt.safety.handoff import TriageHandoff
from wingpt.tokenizer import load_tokenizer
from wingpt.triton_io import parameters, tensor


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.store = StreamStore(load_tokenizer(params["tokenizer_dir"] or None), ttl_s=float(params["stream_ttl_s"]))
        self.handoff = TriageHandoff(params["triage_handoff_dir"])

    def execute(self, requests: list) -> list:
        now = time.monotonic()
        responses = []
        for request in requests:
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
