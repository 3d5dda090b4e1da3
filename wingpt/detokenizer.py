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


class StreamStore:
    """Detokenizer state per stream for a stateless-per-call postprocessing step.

    Triton's ensemble calls postprocessing once per engine response without telling it which
    response is the last, so a stream's state is dropped when it visibly ends (the end id) and
    otherwise after `ttl_s` without news (a stream cut by max_tokens, a stop word or a cancel);
    never more than `max_streams` are kept.
    """

    def __init__(self, tokenizer: QwenTokenizer, ttl_s: float = 600.0, max_streams: int = 100_000) -> None:
        self._tok = tokenizer
        self._ttl_s = ttl_s
        self._max_streams = max_streams
        self._streams: dict[str, tuple[StreamDetokenizer, float]] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, key: str) -> bool:
        """Whether stream `key` has had a response already (its first response is special)."""
        return key in self._streams

    def feed(self, key: str, token_ids: list[int], now: float) -> str:
        """Text for this response of stream `key` ("" = no stream identity: decode this response alone)."""
        detok, _ = self._streams.pop(key, None) or (StreamDetokenizer(self._tok), now)
        ended = self._tok.end_id in token_ids
        if ended:
            token_ids = token_ids[: token_ids.index(self._tok.end_id)]
        text = detok.feed(token_ids)
        if ended or not key:
            return text + detok.finish()
        self._evict(now)
        self._streams[key] = (detok, now)
        return text

    def _evict(self, now: float) -> None:
        # dicts keep insertion order and feed() re-inserts on use, so the oldest entries come first.
        while self._streams:
            key, (_, seen) = next(iter(self._streams.items()))
            if now - seen < self._ttl_s and len(self._streams) < self._max_streams:
                break
            del self._streams[key]
