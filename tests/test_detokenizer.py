"""Streaming detokenization: the concatenated stream always equals the full decode."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from wingpt.detokenizer import StreamDetokenizer, decode_all
from wingpt.tokenizer import load_tokenizer

TOK = load_tokenizer(None)
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK
        st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),  # emoji
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.sampled_from("，。？！：；“”（）℃\n"),
    ),
    max_size=60,
)


def _stream(ids: list[int], cuts: list[int]) -> list[str]:
    detok = StreamDetokenizer(TOK)
    bounds = sorted({c % (len(ids) + 1) for c in cuts} | {0, len(ids)})
    deltas = [detok.feed(ids[a:b]) for a, b in itertools.pairwise(bounds)]
    return [*deltas, detok.finish()]


@settings(max_examples=300, deadline=None)
@given(text=TEXT, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=20))
def test_any_chunking_of_any_text_streams_back_exactly(text: str, cuts: list[int]) -> None:
    ids = TOK.encode(text, allow_special=False)
    deltas = _stream(ids, cuts)
    assert "".join(deltas) == text == decode_all(TOK, ids)
    assert all("\ufffd" not in d for d in deltas)


def test_a_character_split_across_tokens_is_held_back_not_garbled() -> None:
    ids = TOK.encode("頭暈", allow_special=False)
    assert len(ids) == 3  # 暈 spans two tokens
    detok = StreamDetokenizer(TOK)
    assert [detok.feed([i]) for i in ids] == ["頭", "", "暈"]


def test_special_tokens_such_as_end_of_text_are_not_shown() -> None:
    ids = TOK.encode("发烧了", allow_special=False)
    detok = StreamDetokenizer(TOK)
    assert detok.feed(ids[:1]) + detok.feed([*ids[1:], TOK.end_id]) + detok.finish() == "发烧了"


