"""Preprocessing: validate the request, apply the WiNGPT2 template, tokenize, resolve decoding defaults,
and assess clinical red flags.

Every rejection names the offending field and returns INVALID_ARGUMENT; the model keeps serving.
The triage is handed to postprocessing (wingpt/safety/handoff.py), which sends it with the stream's
first response. When the hospital's rules say `continue_generation: false`, a flagged request gets
`request_output_len` 0: the engine answers nothing and the notice stands alone.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from wingpt.chat_template import Message, build_prompt_ids, parse_messages
from wingpt.errors import InvalidRequest
from wingpt.safety import RulesWatcher
from wingpt.safety.handoff import TriageHandoff
from wingpt.sampling import resolve_max_tokens, resolve_sampling
from wingpt.tokenizer import load_tokenizer
from wingpt.triton_io import (
    invalid,
    optional_scalar,
    optional_text,
    optional_texts,
    parameters,
    tensor,
)
from wingpt.word_lists import encode_word_list

# Greedy is sent as top_k 1 with temperature 1: what tensorrt_llm needs; the torch engine reads it the same way.
GREEDY_TOP_K = 1


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.tok = load_tokenizer(params["tokenizer_dir"] or None)
        self.context_window = int(params["context_window"])
        self.max_tokens_default = int(params["max_tokens_default"])
        self.max_tokens_limit = int(params["max_tokens_limit"])
        self.system_prompt = params.get("system_prompt", "")
        self.rules = RulesWatcher(params.get("safety_rules") or None)
        self.handoff = TriageHandoff(params["triage_handoff_dir"])

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=self._prepare(request)))
            except InvalidRequest as exc:
                responses.append(invalid(exc))
        return responses

    def _prompt_ids(self, request: object, max_tokens: int) -> tuple[list[int], list[Message]]:
        """The prompt's token ids, and the turns the safety rules read (a raw prompt is read whole)."""
        text = optional_text(request, "text_input")
        messages = optional_text(request, "messages")
        if (text is None) == (messages is None):
            raise InvalidRequest("messages", "send exactly one of 'messages' (chat) or 'text_input' (raw prompt)")
        budget = self.context_window - max_tokens
        if messages is not None:
            turns = parse_messages(messages)
            ids, _dropped = build_prompt_ids(self.tok, turns, budget, self.system_prompt)
            return ids, turns
        if not text.strip():
            raise InvalidRequest("text_input", "is empty")
        ids = self.tok.encode(text)
        if len(ids) > budget:
            raise InvalidRequest(
                "text_input",
                f"prompt is {len(ids)} tokens but only {budget} fit beside max_tokens={max_tokens} "
                f"in the {self.context_window}-token context window",
            )
        return ids, [Message("user", text)]

    def _prepare(self, request: object) -> list:
        max_tokens = resolve_max_tokens(
            optional_scalar(request, "max_tokens"), self.max_tokens_default, self.max_tokens_limit
        )
        sampling = resolve_sampling(
            temperature=optional_scalar(request, "temperature"),
            top_k=optional_scalar(request, "top_k"),
            top_p=optional_scalar(request, "top_p"),
            repetition_penalty=optional_scalar(request, "repetition_penalty"),
            seed=optional_scalar(request, "random_seed"),
        )
        ids, turns = self._prompt_ids(request, max_tokens)
        assessor = self.rules.assessor()
        triage = assessor.assess(turns)
        if triage.flagged and not assessor.rules.continue_generation:
            max_tokens = 0
        self.handoff.put(request.request_id(), triage.to_json())
        end_id = optional_scalar(request, "end_id")
        pad_id = optional_scalar(request, "pad_id")
        stream = optional_scalar(request, "stream")
        return [
            tensor("input_ids", [ids], np.int32),
            tensor("input_lengths", [[len(ids)]], np.int32),
            tensor("request_output_len", [[max_tokens]], np.int32),
            tensor("out_end_id", [[self.tok.end_id if end_id is None else end_id]], np.int32),
            tensor("out_pad_id", [[self.tok.pad_id if pad_id is None else pad_id]], np.int32),
            tensor("stop_words_list", [encode_word_list(self.tok, optional_texts(request, "stop_words"))], np.int32),
            tensor("bad_words_list", [encode_word_list(self.tok, optional_texts(request, "bad_words"))], np.int32),
            tensor("out_temperature", [[1.0 if sampling.greedy else sampling.temperature]], np.float32),
            tensor("runtime_top_k", [[GREEDY_TOP_K if sampling.greedy else sampling.top_k]], np.int32),
            tensor("runtime_top_p", [[sampling.top_p]], np.float32),
            tensor("out_repetition_penalty", [[sampling.repetition_penalty]], np.float32),
            tensor("seed", [[sampling.seed or 0]], np.uint64),
            tensor("streaming", [[bool(stream)]], np.bool_),
        ]
