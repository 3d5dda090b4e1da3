"""Every red-flag category, both ways: what must fire (a miss is a patient sent away) and what
must stay quiet (a false alarm teaches patients to ignore the notice). Cases include negation,
history, typos and traditional characters; they run through the shipped rules file."""

from __future__ import annotations

import pytest

from wingpt.chat_template import Message
from wingpt.safety import TriageAssessor, TriageResult, load_rules


@pytest.fixture(scope="module")
def assessor() -> TriageAssessor:
    return TriageAssessor(load_rules())


def assess(assessor: TriageAssessor, *user_turns: str) -> TriageResult:
    messages: list[Message] = []
    for i, text in enumerate(user_turns):
        if i:
            messages.append(Message("assistant", "请问还有其他不舒服吗？"))
        messages.append(Message("user", text))
    return assessor.assess(messages)


# category id -> (messages that must raise it, messages that must not)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "chest_pain_acs": (
        [
            "我胸口痛，还出了一身冷汗",
            "胸痛，疼到左肩和左胳膊",
            "胸口像压了块大石头，喘不上气",
            "胸口很闷，一直冒冷汗",
            "胸痛三天了，今天后背也疼",
            "胸通，出冷汉",  # typos
            "胸悶，還出了一身冷汗",  # traditional
            "心脏不舒服，出冷汗",
        ],
        [
            "没有胸痛，也没有出汗",
            "否认胸痛、胸闷及大汗",
            "胸痛，不出汗",
            "运动后出汗很多正常吗",
            "去年胸痛出冷汗，放了支架",
            "胸口痛不明显，有点出汗",
        ],
    ),
    "stroke_signs": (
        [
            "我爸突然嘴歪了",
            "左边手脚没力气，抬不起来",
            "今天早上起来左手拿不住东西",
            "我妈说话不清楚",
            "是不是中风了",
            "媽媽說話不清楚，嘴角歪了",  # traditional
            "口角歪邪",  # typo
            "去年中风过，今天又说话不清楚",
        ],
        [
            "去年中风过，现在恢复得不错",
            "有中风病史，想问问降压药怎么吃",
            "没有口角歪斜，说话也清楚",
            "右手发麻",
            "我以前中风过",
        ],
    ),
    "unconscious_seizure": (
        [
            "孩子突然抽搐，叫不醒",
            "他昏过去了",
            "刚才晕倒了一次",
            "孩子抽蓄，口吐白沫",  # typo
            "爺爺突然暈倒了",  # traditional
            "叫他没反应",
        ],
        ["眼皮抽搐怎么办", "腿抽筋了", "以前晕倒过", "没有晕倒", "吃药没反应", "头晕到想吐", "今天去医院抽了一下血"],
    ),
    "severe_bleeding": (
        ["伤口流血止不住", "吐了很多血", "大出血", "流鼻血止不住", "傷口流血止不住"],
        ["痰中带血丝", "咳嗽有血丝", "没有出血", "月经量很大", "出血不多"],
    ),
    "breathing_difficulty": (
        ["喘不上气，嘴唇发紫", "呼吸困难", "孩子被东西噎住了", "呼吸困難", "呼吸苦难"],
        ["没有呼吸困难", "我有点喘", "跑步后气喘", "没有呼吸急促"],
    ),
    "anaphylaxis": (
        [
            "吃了海鲜过敏，喉咙发紧",
            "被蜜蜂蛰了，嘴唇肿了",
            "过敏性休克",
            "打针后过敏，晕倒了",
            "過敏，喉嚨腫",
            "过民，喉咙肿",
        ],
        ["我对花粉过敏，打喷嚏", "过敏，全身起红疹", "以前青霉素过敏，想问能不能打疫苗"],
    ),
    "suicide_self_harm": (
        ["我不想活了", "我想自杀", "活着没意思，想死", "想紫砂", "我想自殺", "想自刹", "以前割过腕，最近又很难受"],
        ["我不想死", "我没有自杀的想法", "我们这边跳楼价", "热死了", "笑死我了"],
    ),
    "poisoning_overdose": (
        [
            "孩子误服了降压药",
            "吃了一瓶安眠药",
            "我儿子把我的安眠药吃了",
            "孩子吞了一颗纽扣电池",
            "喝了农药",
            "煤气中毒",
            "吃了一瓶安眠要",  # typo
            "孩子誤服了藥",  # traditional
        ],
        ["我吃了两片安眠药", "食物中毒了，拉肚子", "蔬菜有农药残留吗", "没有误服"],
    ),
    "infant_fever": (
        [
            "宝宝2个月大，发烧38.5度",
            "出生40天，体温38.2",
            "新生儿发热",
            "宝宝刚满月，额头很烫",
            "两个月的宝宝烧到39度",
            "宝宝还不到3个月，发烧了",
            "寶寶兩個月，發燒38.5度",  # traditional
            "宝宝50天，发骚38度",  # typo
        ],
        [
            "宝宝2岁，发烧38.5度",
            "宝宝3个月大发烧38度",  # three months is not under three months
            "宝宝2个月，体温37.5度",
            "宝宝2个月大，没有发烧",
            "宝宝1岁2个月大，发烧38.5",
            "宝宝发烧2天了",
        ],
    ),
    "child_high_fever_lethargy": (
        [
            "女儿发烧40度，精神很差，一直睡",
            "孩子高烧不退，没精神",
            "孩子5岁，烧到40.5度，蔫蔫的",
            "兒子發燒40度，精神很差",
        ],
        ["孩子高烧40度，但是精神很好", "我发烧40度，精神很差", "孩子发烧39度，没精神"],
    ),
    "pregnancy_severe_abdominal_pain": (
        [
            "怀孕8周，肚子痛得受不了",
            "孕30周，肚子剧烈疼痛",
            "我可能怀孕了，下腹剧痛",
            "懷孕，肚子痛得受不了",
            "怀运了，肚子痛得打滚",
        ],
        ["没有怀孕，肚子很痛", "备孕期间肚子很痛", "怀孕了，肚子有点痛"],
    ),
    "chest_pain": (
        ["胸痛", "胸闷气短", "胸口一阵阵刺痛", "胸痛，不出汗"],
        ["没有胸痛", "我有点胸闷", "我不头晕，也不胸痛"],
    ),
    "pregnancy_pain_or_bleeding": (
        ["怀孕了，见红了", "怀孕了，肚子有点痛", "我怀孕5个月了，肚子一阵阵的痛", "孕12周，阴道出血"],
        ["怀孕了想问能不能喝咖啡", "没有怀孕，见红是月经吗"],
    ),
    "child_fever_lethargy": (
        ["孩子发烧39度，没精神", "宝宝发烧38.5度，不吃奶"],
        ["孩子发烧39度，精神还可以", "孩子没精神，没有发烧"],
    ),
}


def _params(kind: int) -> list:
    return [pytest.param(cat, text, id=f"{cat}-{text}") for cat, cases in CASES.items() for text in cases[kind]]


@pytest.mark.parametrize(("category", "text"), _params(0))
def test_red_flag_is_caught(assessor: TriageAssessor, category: str, text: str) -> None:
    """False negatives: each of these must raise its category."""
    result = assess(assessor, text)
    assert category in result.categories, (result.categories, result.evidence)
    assert result.flagged and result.notice


@pytest.mark.parametrize(("category", "text"), _params(1))
def test_no_false_alarm(assessor: TriageAssessor, category: str, text: str) -> None:
    """False positives: negated, past, milder or unrelated mentions must not raise the category."""
    result = assess(assessor, text)
    assert category not in result.categories, result.evidence


def test_every_shipped_category_has_cases_both_ways() -> None:
    shipped = {c.id for c in load_rules().categories}
    assert shipped == set(CASES)
    assert all(fires and quiet for fires, quiet in CASES.values())


@pytest.mark.parametrize(
    "text",
    [
        "宝宝15个月37.3度算发烧吗？",
        "高血压患者平时饮食需要注意什么？",
        "最近胃不舒服，吃完饭就胀",
        "体检发现甲状腺结节3类，需要手术吗？",
        "膝盖疼了好几个月，上下楼梯特别明显",
        "我不知道为什么最近总是头痛",
        "孩子3岁，发烧38度，精神还可以，能吃能玩",
    ],
)
def test_ordinary_questions_raise_nothing(assessor: TriageAssessor, text: str) -> None:
    result = assess(assessor, text)
    assert result == TriageResult(), result.evidence
    assert result.to_json() == '{"level":"none","categories":[],"notice":""}'


def test_level_is_the_highest_and_milder_categories_are_superseded(assessor: TriageAssessor) -> None:
    result = assess(assessor, "胸痛，出冷汗，怀孕了，肚子有点痛")
    assert result.level == "emergency"
    assert result.categories == ["chest_pain_acs", "pregnancy_pain_or_bleeding"]  # emergency first; chest_pain hidden
    assert result.notice.splitlines()[0].startswith("【紧急】")
    assert result.notice.splitlines()[1].startswith("【尽快就医】")


def test_urgent_only(assessor: TriageAssessor) -> None:
    result = assess(assessor, "胸闷气短")
    assert (result.level, result.categories) == ("urgent", ["chest_pain"])
