"""The engine request for one chat, in the tensors of the pinned release's `tensorrt_llm` model
(which `torch_llm` declares identically), and reading the engine's responses back.

Greedy is sent as top_k 1 with temperature 1: what tensorrt_llm needs; torch_llm reads it the same way.
"""

from __future__ import annotations

import uuid

import numpy as np

from wingpt.orchestrator.chat_request import ChatRequest
from wingpt.tokenizer import QwenTokenizer
from wingpt.word_lists import encode_word_list

GREEDY_TOP_K = 1


def new_engine_id() -> str:
    """The orchestrator's own id for an engine request: unique, never the client's (which may be
    missing or shared), because the engine files cancellation (`stop`) under it."""
    return f"wingpt-{uuid.uuid4().hex}"


def engine_inputs(chat: ChatRequest, tok: QwenTokenizer, streaming: bool) -> dict[str, np.ndarray]:
    """Input tensors (batch of one) for a generation."""
    s = chat.sampling
    return {
        "input_ids": np.array([chat.prompt_ids], np.int32),
        "input_lengths": np.array([[len(chat.prompt_ids)]], np.int32),
        "request_output_len": np.array([[chat.max_tokens]], np.int32),
        "end_id": np.array([[chat.end_id]], np.int32),
        "pad_id": np.array([[chat.pad_id]], np.int32),
        "stop_words_list": encode_word_list(tok, chat.stop_words)[np.newaxis],
        "bad_words_list": encode_word_list(tok, chat.bad_words)[np.newaxis],
        "temperature": np.array([[1.0 if s.greedy else s.temperature]], np.float32),
        "runtime_top_k": np.array([[GREEDY_TOP_K if s.greedy else s.top_k]], np.int32),
        "runtime_top_p": np.array([[s.top_p]], np.float32),
        "repetition_penalty": np.array([[s.repetition_penalty]], np.float32),
        # The seed under both names TensorRT-LLM's backend has used (build_engine/pins.py TRTLLM_SEED_INPUTS).
        "seed": np.array([[s.seed or 0]], np.uint64),
        "random_seed": np.array([[s.seed or 0]], np.uint64),
        "streaming": np.array([[streaming]], np.bool_),
    }


def stop_inputs() -> dict[str, np.ndarray]:
    """tensorrt_llm's `stop` request: sent under the id of the generation to end (the other inputs are
    required by the model's config but ignored)."""
    return {
        "input_ids": np.array([[0]], np.int32),
        "input_lengths": np.array([[1]], np.int32),
        "request_output_len": np.array([[1]], np.int32),
        "stop": np.array([[True]], np.bool_),
    }


def generated_tokens(output_ids: np.ndarray | None, sequence_length: np.ndarray | None, end_id: int) -> list[int]:
    """The tokens of one engine response (batch 1, beam 1), without the end id: a streamed response
    holds only the new tokens, a non-streamed one the whole output (exclude_input_in_output)."""
    if output_ids is None:
        return []
    ids = output_ids.reshape(-1)
    if sequence_length is not None and sequence_length.size:
        ids = ids[: int(sequence_length.reshape(-1)[0])]
    return [int(t) for t in ids if t != end_id]
