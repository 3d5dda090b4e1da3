"""TensorRT-LLM's stop/bad word list tensor: [2, L] with concatenated token ids in row 0 and the
cumulative end offset of each word in row 1 (ids padded with 0, offsets with -1)."""

from __future__ import annotations

import numpy as np

from wingpt.tokenizer import QwenTokenizer


def encode_word_list(tok: QwenTokenizer, words: list[str]) -> np.ndarray:
    ids: list[int] = []
    offsets: list[int] = []
    for word in words:
        ids += tok.encode(word, allow_special=False)
        offsets.append(len(ids))
    width = max(len(ids), 1)
    out = np.zeros((2, width), dtype=np.int32)
    out[1, :] = -1
    out[0, : len(ids)] = ids
    out[1, : len(offsets)] = offsets
    return out


def decode_word_list(array: np.ndarray | None) -> list[list[int]]:
    """Token sequences of a [2, L] (or [1, 2, L]) word list; empty for None or an all-padding list."""
    if array is None:
        return []
    array = array.reshape(2, -1)
    words, start = [], 0
    for end in array[1]:
        if end < 0:
            break
        words.append([int(t) for t in array[0, start:end]])
        start = int(end)
    return [w for w in words if w]
