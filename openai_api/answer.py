"""What the endpoint adds to the server's text stream: OpenAI's stop semantics, token counts, finish reason.

Triton's answer ends *with* the stop sequence that ended it (the engine stops after generating it);
OpenAI's never contains it, so the last characters are held back until the next delta shows they are
not the start of a stop sequence, and a stop sequence at the very end is dropped.

The server reports neither token counts nor why an answer ended, so both are computed here with the
project's tokenizer and chat template (`wingpt/`): the prompt exactly as the server builds it (same
template, preamble and context-window fitting), the completion by encoding each streamed delta (each
is the text of one or more generated tokens). `finish_reason` is `length` when the answer used its
whole `max_tokens` budget, else `stop`.
"""

from __future__ import annotations

from wingpt.chat_template import build_prompt_ids, parse_messages
from wingpt.errors import InvalidRequest
from wingpt.tokenizer import QwenTokenizer


class TokenCounter:
    """Usage counts as the server's preprocessing would compute them."""

    def __init__(self, tok: QwenTokenizer, context_window: int, system_prompt: str) -> None:
        self.tok, self.context_window, self.system_prompt = tok, context_window, system_prompt

    def prompt_tokens(self, turns: list[dict[str, str]], max_tokens: int) -> int:
        messages = parse_messages(turns)
        try:
            ids, _dropped = build_prompt_ids(self.tok, messages, self.context_window - max_tokens, self.system_prompt)
        except InvalidRequest:  # the server accepted it, so it fit; count the whole prompt
            ids, _dropped = build_prompt_ids(self.tok, messages, 1 << 30, self.system_prompt)
        return len(ids)

    def delta_tokens(self, delta: str) -> int:
        return max(1, len(self.tok.encode(delta, allow_special=False)))


class Answer:
    """One answer's text as OpenAI shows it, fed delta by delta; `feed` returns what may be sent now."""

    def __init__(self, counter: TokenCounter, max_tokens: int, stops: list[str]) -> None:
        self._counter = counter
        self.max_tokens = max_tokens
        self._stops = sorted(stops, key=len, reverse=True)
        self._hold = max((len(s) for s in stops), default=0)
        self._pending = ""
        self.completion_tokens = 0
        self.stopped_by_sequence = False

    def feed(self, delta: str) -> str:
        self.completion_tokens += self._counter.delta_tokens(delta)
        if not self._hold:
            return delta
        self._pending += delta
        cut = max(0, len(self._pending) - self._hold)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return ready

    def finish(self) -> str:
        """The held-back tail, minus a stop sequence it ends with."""
        tail, self._pending = self._pending, ""
        for stop in self._stops:
            if tail.endswith(stop):
                self.stopped_by_sequence = True
                return tail[: -len(stop)]
        return tail

    @property
    def finish_reason(self) -> str:
        if self.stopped_by_sequence or self.completion_tokens < self.max_tokens:
            return "stop"
        return "length"
