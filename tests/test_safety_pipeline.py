"""The clinical safety layer inside the real Triton pipeline: every client gets the triage flags,
before the first generated token, and a hospital's edit of the rules file takes effect without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wingpt_client import WingptClient

from serving.ensemble_calls import EnsembleStream, chat_inputs
from wingpt.safety import DISCLAIMER
from wingpt.safety.rules import DEFAULT_RULES

CHEST_PAIN = "我胸口剧痛，一直出冷汗，左臂发麻"



def _first_delta_and_triage(client: WingptClient, messages, **sampling):
    """The triage as it stood when the first text delta arrived, and the whole answer."""
    with client.stream_chat(messages, max_tokens=8, **sampling) as stream:
        deltas = list(stream)
        return stream, deltas


@pytest.mark.parametrize(
    ("message", "category"),
    [
        (CHEST_PAIN, "chest_pain_acs"),
        ("我爸突然嘴歪了，右边胳膊抬不起来，说话含糊", "stroke_signs"),
        ("我胸口劇痛，一直出冷汗", "chest_pain_acs"),  # traditional characters
        ("我不想活了", "suicide_self_harm"),
    ],
)
def test_an_emergency_is_flagged_before_the_first_token_and_the_answer_still_follows(
    client: WingptClient, message: str, category: str
) -> None:
    with client.stream_chat(message, max_tokens=8) as stream:
        first = next(stream)
        triage_at_first_token = stream.triage  # before, or with, the first text
        rest = "".join(stream)
    assert triage_at_first_token is not None
    assert triage_at_first_token.level == "emergency"
    assert category in triage_at_first_token.categories
    assert "120" in triage_at_first_token.notice
    assert (first + rest).strip(), "continue_generation is true by default: the model still answers"


# One message per presentation the rules cover since issue 17 (lay words, as patients write them).
NEWLY_COVERED = [
    ("我妈一边脸发麻，说话舌头打结", "stroke_signs"),
    ("打完针以后血压往下掉，人发晕", "anaphylaxis"),
    ("嗓子肿得口水都咽不下，吸气有呼噜声", "airway_obstruction"),
    ("孩子撞到头以后吐了三次", "head_trauma"),
    ("突然头痛得像要炸开，从来没这么痛过", "thunderclap_headache"),
    ("宝宝吃葡萄噎住了，嘴唇发紫", "breathing_difficulty"),
    ("孩子掉进水塘里溺水了", "drowning"),
    ("我儿子喝农药了", "poisoning_overdose"),
    ("在山上被毒蛇咬了", "envenomation"),
    ("孩子发高烧，脖子硬", "meningitis_signs"),
    ("被开水烫伤了，两条腿全是水泡", "severe_burn"),
    ("后背突然撕裂样疼痛", "aortic_tearing_pain"),
    ("爷爷今天突然不认人，说胡话", "acute_confusion"),
    ("拉了一天肚子，一天没尿了", "shock_dehydration"),
    ("化疗后发烧39度", "sepsis_signs"),
    ("屋里烧炭取暖，全家头痛恶心", "carbon_monoxide"),
    ("从三楼阳台摔下来了", "major_trauma"),
    ("工人触电了", "electrical_injury"),
    ("在太阳底下干活，人迷糊了，身上滚烫", "heatstroke"),
    ("脚冻得发黑，没有知觉", "hypothermia_frostbite"),
    ("肚子痛得在地上打滚", "acute_abdomen"),
    ("儿子蛋蛋突然剧痛", "testicular_torsion"),
    ("血糖2.3，一身冷汗", "diabetic_emergency"),
    ("血压210/120，头痛得厉害", "hypertensive_crisis"),
    ("左眼突然看不见了", "vision_loss_eye_injury"),
    ("刚做完手术躺了几天，突然气短", "pulmonary_embolism"),
    ("我弟拿着刀乱砍人", "violence_psychosis"),
    ("孕35周，羊水破了", "obstetric_emergency"),
]


@pytest.mark.parametrize(("message", "category"), NEWLY_COVERED, ids=[c for _, c in NEWLY_COVERED])
def test_each_newly_covered_presentation_gets_its_notice_with_the_first_response(
    client: WingptClient, message: str, category: str
) -> None:
    with client.stream_chat(message, max_tokens=1) as stream:
        next(stream, None)
        triage = stream.triage
    assert triage is not None and triage.level == "emergency"
    assert category in triage.categories
    assert triage.notice.startswith("【紧急】")


@pytest.mark.parametrize(
    "message",
    [
        "我没有胸痛，只是有点咳嗽",  # negation
        "去年中风过，现在想问问饮食注意什么",  # history, not a current event
        "孩子咳嗽三天了怎么办？",
        "心梗的早期症状有哪些？",  # a question about a disease in general
    ],
)
def test_ordinary_questions_are_not_flagged(client: WingptClient, message: str) -> None:
    stream, deltas = _first_delta_and_triage(client, message)
    assert stream.triage is not None and stream.triage.level == "none"
    assert stream.triage.categories == () and stream.triage.notice == ""
    assert "".join(deltas)


def test_a_combination_can_be_completed_by_an_earlier_turn(client: WingptClient) -> None:
    history = [
        {"role": "user", "content": "我胸口很痛"},
        {"role": "assistant", "content": "疼痛持续多久了？"},
        {"role": "user", "content": "半小时了，现在全身冒冷汗"},
    ]
    stream, _ = _first_delta_and_triage(client, history)
    assert stream.triage is not None and "chest_pain_acs" in stream.triage.categories


def test_the_triage_arrives_with_the_first_response(triton_server) -> None:
    """Any Triton client that sends a request id (not only ours) gets `triage` in the stream's first response."""
    stream = EnsembleStream(triton_server.grpc_url, chat_inputs([{"role": "user", "content": CHEST_PAIN}],
                                                               max_tokens=4, stream=True))
    try:
        result = stream.read()
    finally:
        stream.close()
    assert result.error is None
    assert result.triage is not None and result.triage["level"] == "emergency"
    assert "triage" in result.outputs[0]
    assert all("triage" not in names for names in result.outputs[1:]), "sent once per stream"


def test_a_raw_text_prompt_is_assessed_too(triton_server) -> None:
    stream = EnsembleStream(triton_server.grpc_url, {"text_input": f"User:{CHEST_PAIN}<|endoftext|>\n Assistant:",
                                                    "max_tokens": 2})
    try:
        result = stream.read()
    finally:
        stream.close()
    assert result.triage is not None and result.triage["categories"] == ["chest_pain_acs"]


def test_every_client_can_read_the_disclaimer_from_the_server(client: WingptClient) -> None:
    assert client.model_info().disclaimer == DISCLAIMER


def _edit_rules(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    time.sleep(1.5)  # the server checks the file at most once a second


@pytest.fixture
def rules_file(triton_server) -> Iterator[Path]:
    path = Path(triton_server.settings.safety_rules)
    try:
        yield path
    finally:
        _edit_rules(path, DEFAULT_RULES.read_text(encoding="utf-8"))


def test_a_hospital_can_switch_to_notice_only_answers_without_a_restart(client: WingptClient, rules_file: Path) -> None:
    original = DEFAULT_RULES.read_text(encoding="utf-8")
    assert "continue_generation: true" in original
    _edit_rules(rules_file, original.replace("continue_generation: true", "continue_generation: false"))

    stream, deltas = _first_delta_and_triage(client, CHEST_PAIN)
    assert stream.triage is not None and stream.triage.level == "emergency"
    assert deltas == [], "the notice stands alone: no generated answer"

    _, ordinary = _first_delta_and_triage(client, "孩子咳嗽三天了怎么办？")
    assert "".join(ordinary), "unflagged questions are still answered"


def test_a_broken_rules_edit_keeps_the_previous_rules_in_force(
    client: WingptClient, rules_file: Path, triton_server
) -> None:
    _edit_rules(rules_file, "version: 1\ncategories: [this is not valid\n")
    stream, _ = _first_delta_and_triage(client, CHEST_PAIN)
    assert stream.triage is not None and stream.triage.level == "emergency"
    assert "kept the previous triage rules" in triton_server.log_text()
