"""Streaming detokenization that never emits a broken UTF-8 sequence.

Qwen's BPE tokens are byte strings: one Chinese character or emoji often spans two tokens.
Decoding each new token alone garbles the stream (tensorrtllm_backend issues 192, 196, 493,
606), and `errors='ignore'` silently drops characters. We feed raw bytes to an incremental
UTF-8 decoder, which holds back an incomplete sequence until its last byte arrives, so the
concatenated deltas always equal the full decode.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from wingpt.tokenizer import QwenTokenizer


class StreamDetokenizer:
    """Turns successive chunks of generated token ids into text deltas for one stream."""

    def __init__(self, tokenizer: QwenTokenizer) -> None:
        self._tok = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.finished = False

    def feed(self, token_ids: Iterable[int]) -> str:
        """Text completed by these tokens. Special tokens (end of text, pads) produce no text."""
        data = b"".join(self._tok.token_bytes(t) for t in token_ids if not self._tok.is_special(t))
        return self._decoder.decode(data, final=False)

    def finish(self) -> str:
        """Flush at end of stream: bytes of a character cut off by max_tokens become U+FFFD."""
        self.finished = True
        return self._decoder.decode(b"", final=True)


def decode_all(tokenizer: QwenTokenizer, token_ids: Iterable[int]) -> str:
    """The non-streamed text of a generation; equals the concatenation of a stream's deltas."""
    detok = StreamDetokenizer(tokenizer)
    return detok.feed(token_ids) + detok.finish()
