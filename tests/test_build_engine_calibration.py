"""The shipped calibration set: Chinese medical chat in the exact WiNGPT2 template, packed for ModelOpt."""

from __future__ import annotations

import json
import re

import pytest

from build_engine import calibration, make_calibration
from build_engine import calibration_sources as src
from build_engine.settings import SHIPPED_CALIBRATION
from wingpt.chat_template import Message, render_text
from wingpt.tokenizer import ENDOFTEXT, load_tokenizer

SINGLE_TURN = re.compile(r"User: (?P<q>[^<\n]+)<\|endoftext\|>\n Assistant:")
THREE_TURNS = re.compile(r"User: (?P<q1>[^<\n]+)<\|endoftext\|>\n Assistant:(?P<a1>[^<\n]+)<\|endoftext\|>\n "
                         r"User: (?P<q2>[^<\n]+)<\|endoftext\|>\n Assistant:")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [json.loads(line) for line in SHIPPED_CALIBRATION.read_text(encoding="utf-8").splitlines()]


def test_at_least_256_prompts(records):
    assert len(records) >= 256
    assert all(set(r) == {"kind", "text"} for r in records)


def test_every_prompt_is_in_the_exact_template(records):
    for r in records:
        text = r["text"]
        assert text.endswith(" Assistant:")
        if r["kind"] == "triage-dialogue":
            m = THREE_TURNS.fullmatch(text)
            assert m, text
            expected = render_text([Message("user", m["q1"]), Message("assistant", m["a1"]), Message("user", m["q2"])])
        else:
            m = SINGLE_TURN.fullmatch(text)
            assert m, text
            expected = render_text([Message("user", m["q"])])
        assert text == expected


def test_the_template_tokenizes_like_the_model_card_example(records):
    tok = load_tokenizer()
    ids = tok.encode(records[0]["text"])
    assert ids[-4:] == [tok.eod_id, 198, 21388, 25]  # <|endoftext|> "\n" " Assistant" ":" (DESIGN.md)


def test_kinds_cover_triage_drugs_diseases_and_the_seed(records):
    kinds = {}
    for r in records:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    assert kinds == {"triage": 120, "triage-dialogue": 12, "drug": 60, "disease": 105, "seed": 5}


def test_the_five_seed_questions_are_verbatim(records):
    texts = {r["text"] for r in records}
    for question in src.SEED_QUESTIONS:
        assert f"User: {question}{ENDOFTEXT}\n Assistant:" in texts


def test_qizhen_templates_are_used(records):
    texts = [r["text"] for r in records]
    assert any("非布司他片的适应病症是什么？" in t for t in texts)
    assert any(t.startswith("User: 氟奋乃静癸酸酯注射液的适应病症") for t in texts)
    for template in src.DISEASE_TEMPLATES:
        pattern = re.compile("User: " + re.escape(template).replace(r"\{\}", ".+") + ENDOFTEXT.replace("|", r"\|"))
        assert any(pattern.match(t) for t in texts), template


def test_the_file_is_what_the_generator_writes():
    assert make_calibration.main(["--check"]) == 0


def test_packing_deals_every_prompt_once_round_robin():
    prompts = [f"p{i}" for i in range(10)]
    packed = calibration.pack(prompts, 4)
    assert packed[0] == calibration.TURN_SEPARATOR.join(["p0", "p4", "p8"])
    assert sorted(p for text in packed for p in text.split(calibration.TURN_SEPARATOR)) == sorted(prompts)
    assert calibration.pack(prompts, 32) == prompts


def test_packed_samples_fit_the_calibration_length_and_mix_kinds(records):
    tok = load_tokenizer()
    packed = calibration.pack([r["text"] for r in records], 32)
    lengths = [len(tok.encode(text)) for text in packed]
    assert max(lengths) <= 512  # --calib_max_seq_length: nothing is truncated
    assert max(lengths) < 1.5 * min(lengths)  # similar lengths: little padding
    assert all("适应病症" in text and "Assistant:" in text for text in packed)


def test_packed_text_is_one_multi_turn_chat():
    joined = calibration.pack([render_text([Message("user", "a")]), render_text([Message("user", "b")])], 1)[0]
    assert joined == f"User: a{ENDOFTEXT}\n Assistant:{ENDOFTEXT}\n User: b{ENDOFTEXT}\n Assistant:"


def test_staged_file_has_the_text_column_quantize_py_reads():
    staged = calibration.staged_jsonl(["User: 你好" + ENDOFTEXT + "\n Assistant:"])
    assert json.loads(staged) == {"text": "User: 你好<|endoftext|>\n Assistant:"}
    assert calibration.STAGED_FILE == "train.jsonl"
