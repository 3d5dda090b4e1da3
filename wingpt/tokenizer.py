"""Qwen's tiktoken BPE tokenizer for WiNGPT2, loaded without any hub access.

Qwen v1 ships no `tokenizer.json`, and its remote-code `QWenTokenizer` has no `eos_token`
(tensorrtllm_backend issue 514), so we load `qwen.tiktoken` with tiktoken directly and name
the special tokens ourselves.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
from pathlib import Path

import tiktoken

TIKTOKEN_FILE = "qwen.tiktoken"
# Qwen v1's split pattern (from its tokenization_qwen.py).
PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
NUM_EXTRA_TOKENS = 205
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, *tuple(f"<|extra_{i}|>" for i in range(NUM_EXTRA_TOKENS)))
# The model's embedding is padded to this size; ids past the tokenizer's are never produced by training.
PADDED_VOCAB_SIZE = 151936


def find_tiktoken_file(model_dir: str | Path | None = None) -> Path:
    """The model directory's `qwen.tiktoken` if it has one, else the copy the `dashscope` wheel ships.

    The wheel is located without importing it: dashscope's `__init__` pulls in its whole SDK, and
    only the data file is wanted (a bare `dashscope/resources/qwen.tiktoken` on the path works too).
    """
    if model_dir is not None:
        candidate = Path(model_dir) / TIKTOKEN_FILE
        if candidate.is_file():
            return candidate
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"no {TIKTOKEN_FILE} in {model_dir!s} and the 'dashscope' package that ships one is not installed"
        )
    for location in spec.submodule_search_locations:
        bundled = Path(location) / "resources" / TIKTOKEN_FILE
        if bundled.is_file():
            return bundled
    raise FileNotFoundError(f"resources/{TIKTOKEN_FILE} is missing from the installed dashscope package")


def _load_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class QwenTokenizer:
    """Encode/decode with Qwen's BPE; `<|endoftext|>` is both the end and the pad id."""

    def __init__(self, tiktoken_file: Path) -> None:
        ranks = _load_ranks(tiktoken_file)
        first_special = len(ranks)
        self.special_tokens = {tok: first_special + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self._encoding = tiktoken.Encoding(
            "qwen", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )
        self.tiktoken_file = tiktoken_file
        self.eod_id = self.special_tokens[ENDOFTEXT]
        self.vocab_size = self._encoding.n_vocab

    @property
    def end_id(self) -> int:
        return self.eod_id

    @property
    def pad_id(self) -> int:
        return self.eod_id

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Special-token text (e.g. the template's `<|endoftext|>`) becomes its id only when allowed;
        user text is encoded with `allow_special=False` so a patient cannot inject template tokens."""
        if allow_special:
            return self._encoding.encode(text, allowed_special="all")
        return self._encoding.encode(text, disallowed_special=())

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token; ids past the tokenizer (padding rows of the embedding) are empty."""
        if token_id >= self.vocab_size or token_id < 0:
            return b""
        return self._encoding.decode_single_token_bytes(token_id)

    def is_special(self, token_id: int) -> bool:
        return token_id >= self.eod_id

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        if skip_special:
            ids = [i for i in ids if not self.is_special(i)]
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")


@functools.lru_cache(maxsize=4)
def load_tokenizer(model_dir: str | None = None) -> QwenTokenizer:
    """One tokenizer per model directory per process."""
    return QwenTokenizer(find_tiktoken_file(model_dir))
