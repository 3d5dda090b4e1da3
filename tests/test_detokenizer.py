"""Streaming detokenization: the concatenated stream always equals the full decode."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from wingpt.detokenizer import StreamDetokenizer, StreamStore, decode_all
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


def test_end_of_text_ends_the_stream_and_is_not_shown() -> None:
    store = StreamStore(TOK)
    ids = TOK.encode("发烧了", allow_special=False)
    assert store.feed("r1", ids[:1], now=0.0) + store.feed("r1", [*ids[1:], TOK.end_id], now=1.0) == "发烧了"
    assert len(store) == 0


def test_streams_are_kept_apart_and_abandoned_ones_expire() -> None:
    store = StreamStore(TOK, ttl_s=10)
    a, b = TOK.encode("頭暈", allow_special=False), TOK.encode("暈倒", allow_special=False)
    out_a = store.feed("a", a[:2], now=0.0)
    out_b = store.feed("b", b[:1], now=1.0)
    out_a += store.feed("a", a[2:], now=2.0)
    assert out_a == "頭暈"
    assert out_b == ""  # still waiting for the rest of 暈
    store.feed("c", TOK.encode("好", allow_special=False), now=30.0)
    assert len(store) == 1  # a and b expired, c is live
