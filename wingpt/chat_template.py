"""The WiNGPT2 chat template (model card, 提示) and context-window fitting.

    User: q1<|endoftext|>\n Assistant:a1<|endoftext|>\n User: q2<|endoftext|>\n Assistant:

Turns are tokenized piece by piece with user text encoded *without* special tokens, so a
patient typing `<|endoftext|>` cannot forge a turn boundary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wingpt.errors import InvalidRequest
from wingpt.tokenizer import ENDOFTEXT, QwenTokenizer

ROLES = ("system", "user", "assistant")
USER_PREFIX = "User: "
ASSISTANT_PREFIX = "Assistant:"


@dataclass(frozen=True)
class Message:
    role: str
    content: str


def parse_messages(raw: str | bytes | list[Any]) -> list[Message]:
    """Validate the `messages` input: a JSON list of {role, content}, ending with a user turn."""
    field = "messages"
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(field, f"is not valid UTF-8 (byte {exc.start})") from None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(field, f"is not valid JSON ({exc.msg} at position {exc.pos})") from None
        except RecursionError:
            raise InvalidRequest(field, "is nested too deeply to be a list of {role, content} objects") from None
        except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit conversion limit
            raise InvalidRequest(field, f"is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest(field, "must be a non-empty JSON list of {role, content} objects")
    messages: list[Message] = []
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(where, "must be an object with 'role' and 'content'")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise InvalidRequest(f"{where}.role", f"unknown role {_short(role)}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise InvalidRequest(f"{where}.content", "must be a string")
        if role == "system" and i != 0:
            raise InvalidRequest(f"{where}.role", "a system message may only come first")
        messages.append(Message(role, content))
    dialogue = [m for m in messages if m.role != "system"]
    if not dialogue or dialogue[-1].role != "user":
        raise InvalidRequest(field, "the last message must have role 'user'")
    if not dialogue[-1].content.strip():
        raise InvalidRequest(f"{field}[{len(messages) - 1}].content", "the latest user message is empty")
    return messages


def _short(value: Any, limit: int = 40) -> str:
    """A bounded repr for error messages: an error must not echo a huge input (or patient text) back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def render_text(messages: list[Message], system_prompt: str = "") -> str:
    """The prompt as text, exactly as the model card writes it; `build_prompt_ids` tokenizes the same text."""
    return ENDOFTEXT.join(_segments(messages, system_prompt))


def _preamble(messages: list[Message], system_prompt: str) -> str:
    if messages and messages[0].role == "system":
        return messages[0].content
    return system_prompt


def _segments(messages: list[Message], system_prompt: str) -> list[str]:
    """The text between `<|endoftext|>` tokens: one segment per turn, then the open assistant prefix.

    Encoding each segment on its own and joining with the end id gives the same ids as encoding the
    whole prompt text (tiktoken splits at special tokens), while user text stays ordinary text.
    """
    preamble = _preamble(messages, system_prompt)
    dialogue = [m for m in messages if m.role != "system"]
    segments = []
    for i, m in enumerate(dialogue):
        lead = (preamble + "\n" if preamble else "") if i == 0 else "\n "
        prefix = USER_PREFIX if m.role == "user" else ASSISTANT_PREFIX
        segments.append(lead + prefix + m.content)
    segments.append("\n " + ASSISTANT_PREFIX)
    return segments


def build_prompt_ids(
    tok: QwenTokenizer, messages: list[Message], max_prompt_tokens: int, system_prompt: str = ""
) -> tuple[list[int], int]:
    """Token ids of the templated chat, dropping the oldest turns until it fits `max_prompt_tokens`.

    The preamble and the latest user message are always kept, and the kept history starts with a
    user turn. Returns (ids, turns_dropped); raises InvalidRequest if even the latest turn does not fit.
    """
    system = [m for m in messages if m.role == "system"]
    dialogue = [m for m in messages if m.role != "system"]
    starts = [i for i, m in enumerate(dialogue) if m.role == "user"]  # a kept history begins at a user turn
    for start in starts:
        segments = _segments(system + dialogue[start:], system_prompt)
        ids: list[int] = []
        for seg in segments[:-1]:
            ids += [*tok.encode(seg, allow_special=False), tok.eod_id]
        ids += tok.encode(segments[-1], allow_special=False)
        if len(ids) <= max_prompt_tokens:
            return ids, start
    raise InvalidRequest(
        "messages",
        f"the latest user message needs {len(ids)} prompt tokens but only {max_prompt_tokens} fit "
        "beside max_tokens in the context window; shorten it or lower max_tokens",
    )
