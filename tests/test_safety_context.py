"""How a mention is read: negation, history, typos, traditional characters, numbers, and turns.

These pin down the reading rules themselves, beyond the per-category cases: a negation must not
leak onto a later symptom (a missed emergency), and a symptom word that contains 不 or 没
(叫不醒, 没精神) must not be read as a negation."""

from __future__ import annotations

import pytest

from wingpt.chat_template import Message
from wingpt.safety import TriageAssessor, load_rules
from wingpt.safety.bench import LONG_CONSULTATION
from wingpt.safety.extract import ages_days, cn_number, temperatures
from wingpt.safety.normalize import Normalizer


@pytest.fixture(scope="module")
def assessor() -> TriageAssessor:
    return TriageAssessor(load_rules())


def categories(assessor: TriageAssessor, *turns: str) -> list[str]:
    messages = [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    return assessor.assess(messages).categories


class TestNegation:
    @pytest.mark.parametrize(
        "text",
        ["没有胸痛", "无胸痛", "否认胸痛", "未出现胸痛", "没有明显的胸痛", "不是胸痛", "从来没有过胸痛", "胸痛不明显"],
    )
    def test_negated_forms(self, assessor: TriageAssessor, text: str) -> None:
        assert categories(assessor, text) == []

    def test_negation_carries_along_a_list(self, assessor: TriageAssessor) -> None:
        assert categories(assessor, "否认胸痛、胸闷及大汗，否认呼吸困难") == []
        assert categories(assessor, "没有胸痛和出汗") == []

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("不头晕，但是胸口痛，出冷汗", "chest_pain_acs"),  # a clause break ends the negation
            ("没有发烧，胸口痛，出冷汗", "chest_pain_acs"),
            ("没睡好，胸口痛出汗", "chest_pain_acs"),
            ("没睡好胸口痛出汗", "chest_pain_acs"),  # 睡好 is not a filler: the negation is about sleep
            ("我不知道为什么胸口痛，还出汗", "chest_pain_acs"),  # 不知道 is not a negation
            ("是不是中风了", "stroke_signs"),  # nor is the question form 是不是
            ("有没有可能是中风", "stroke_signs"),
            ("左手没力气，说话也说不清楚", "stroke_signs"),  # 没 inside a symptom negates nothing after it
            ("孩子不停地抽搐", "unconscious_seizure"),  # 不停 is listed as not a negation
            ("没有发烧也胸痛出汗", "chest_pain_acs"),
        ],
    )
    def test_negation_does_not_leak(self, assessor: TriageAssessor, text: str, expected: str) -> None:
        assert expected in categories(assessor, text)


class TestHistory:
    @pytest.mark.parametrize(
        "text", ["去年中风过", "以前中风过，已经好了", "三年前得过脑梗", "有脑梗病史", "小时候抽搐过", "既往有心梗史"]
    )
    def test_past_events_stay_quiet(self, assessor: TriageAssessor, text: str) -> None:
        assert categories(assessor, text) == []

    @pytest.mark.parametrize(
        "text",
        [
            "以前中风过，现在又说话不清楚",  # a new clause about now
            "以前就有胸痛现在更厉害了，还出冷汗",  # a present word in the same clause
            "以前就有胸痛，现在更厉害了，还出冷汗",  # a later clause says it is worse now
            "以前也有过胸痛，今天又犯了，出了一身冷汗",  # recurrence brings the past mention back
            "吃饭之前胸口痛，出冷汗",  # 之前 is no history word: 吃饭之前 is today
            "半小时以前开始胸痛，出冷汗",
        ],
    )
    def test_current_events_are_not_taken_for_history(self, assessor: TriageAssessor, text: str) -> None:
        assert categories(assessor, text), text

    @pytest.mark.parametrize("text", ["心梗有什么症状", "中风的前兆有哪些", "脑梗怎么预防",
                                      "出现急性心肌梗死一般对身体带来哪些伤害",  # the seed's comparison question
                                      "心梗会造成什么后果", "中风会导致哪些后遗症"])
    def test_general_questions_about_a_disease_stay_quiet(self, assessor: TriageAssessor, text: str) -> None:
        assert categories(assessor, text) == []

    def test_a_suspected_disease_fires(self, assessor: TriageAssessor) -> None:
        assert categories(assessor, "我是不是心梗了") == ["chest_pain_acs"]
        assert categories(assessor, "我爸好像中风了") == ["stroke_signs"]
        assert categories(assessor, "我有胸痛的症状，还出冷汗") == ["chest_pain_acs"]
        assert categories(assessor, "心梗会带来哪些伤害？我现在胸口剧痛出冷汗") == ["chest_pain_acs"]

    def test_self_harm_keeps_its_history(self, assessor: TriageAssessor) -> None:
        assert categories(assessor, "以前割过腕，最近又很难受") == ["suicide_self_harm"]


class TestQuestionTails:
    """能治好吗, 严重吗, 还有救吗 end a general question and a relative's report alike: the sentence
    is a report when it names whom it happened to as its subject (issue 18: a report of paraquat or
    a stroke ending in 能治好吗 raised no flag)."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("我妈喝了百草枯，能治好吗", "poisoning_overdose"),
            ("我老公脑梗了，还能恢复吗", "stroke_signs"),
            ("孩子抽搐了，会不会有事", "unconscious_seizure"),
            ("我被毒蛇咬了，会死吗", "envenomation"),
            ("爷爷吐了好多血，还有救吗", "severe_bleeding"),
            ("我外婆心梗了要紧吗", "chest_pain_acs"),
            ("宝宝才40天，发烧了，严重吗", "infant_fever"),
        ],
    )
    def test_a_report_with_a_question_tail_is_flagged(self, assessor: TriageAssessor, text: str, expected: str) -> None:
        assert expected in categories(assessor, text)

    @pytest.mark.parametrize(
        "text",
        [
            "脑梗能治好吗",
            "农药中毒还有救吗",
            "癫痫发作会死吗",
            "被毒蛇咬了严重吗",
            "心梗的人能活下来吗",
            "我想知道中风了还能恢复吗",  # the writer asks, nothing happened to them
            "我妈问心梗了能治好吗",
            "如果宝宝抽搐了，会不会有事",  # a hypothetical
            "怎么预防孩子中风了",  # the child is no subject here
        ],
    )
    def test_a_general_question_is_not(self, assessor: TriageAssessor, text: str) -> None:
        assert categories(assessor, text) == []


class TestResolution:
    @pytest.mark.parametrize(
        "text", ["吃东西噎住了，喝了点水就好了", "刚才孩子呛到了，咳出来了", "噎着了，过了一会儿就好了"]
    )
    def test_a_choking_episode_that_is_over_stays_quiet(self, assessor: TriageAssessor, text: str) -> None:
        assert categories(assessor, text) == []

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("噎住了，喝水能好吗", "breathing_difficulty"),  # still choking, asking what helps
            ("噎住了，喝水就好了吗", "breathing_difficulty"),
            ("噎住了，喝口水就好了，现在又噎住了", "breathing_difficulty"),  # it came back
            ("孩子喘不上气，喷了药就好了", "breathing_difficulty"),  # only choking resolves
            ("我爸半边身子突然麻了，十分钟就好了", "stroke_signs"),  # a TIA is still an emergency
            ("胸口压着痛，出冷汗，休息一下就好了", "chest_pain_acs"),
        ],
    )
    def test_what_is_not_over_still_fires(self, assessor: TriageAssessor, text: str, expected: str) -> None:
        assert expected in categories(assessor, text)


class TestNormalisation:
    def test_traditional_full_width_spaces_and_case(self) -> None:
        normalize = Normalizer({})
        assert normalize("頭暈，胸悶") == "头晕,胸闷"
        assert normalize("体温 ３９．５℃") == "体温39.5°c"
        assert normalize("胸 痛\n出汗") == "胸痛。出汗"
        assert normalize("ZS") == "zs"

    def test_typos_are_corrected_after_traditional_conversion(self) -> None:
        assert Normalizer({"胸通": "胸痛"})("胸通") == "胸痛"

    def test_line_break_ends_a_clause(self, assessor: TriageAssessor) -> None:
        assert "chest_pain_acs" in categories(assessor, "不头晕\n胸口痛，出冷汗")

    def test_full_width_temperature(self, assessor: TriageAssessor) -> None:
        assert categories(assessor, "宝宝２个月，体温３８．５度") == ["infant_fever"]


class TestNumbers:
    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("体温39.5度", 39.5),
            ("烧到40了", 40.0),
            ("40°c", 40.0),
            ("三十九度五", 39.5),
            ("39度5", 39.5),
            ("三十八点五度", 38.5),
            ("发烧38.5", 38.5),
            ("102°f", 38.9),
        ],
    )
    def test_temperature(self, text: str, value: float) -> None:
        assert value in [v for v, _, _ in temperatures(text)]

    @pytest.mark.parametrize("text", ["外面气温40度", "体温不到38度", "烧了3天", "发烧39度5天了"])
    def test_not_a_fever_reading(self, text: str) -> None:
        assert all(v < 39.5 for v, _, _ in temperatures(text))

    @pytest.mark.parametrize(
        ("text", "days"),
        [
            ("宝宝2个月大", 60),
            ("出生40天", 40),
            ("两个月的宝宝", 60),
            ("宝宝快三个月了", 89),
            ("不到3个月的宝宝", 89),
            ("3个月不到的宝宝", 89),
            ("宝宝2个半月", 75),
            ("宝宝8周", 56),
            ("6周龄", 42),
            ("宝宝1岁2个月大", 425),
            ("孩子5岁", 1825),
        ],
    )
    def test_age(self, text: str, days: int) -> None:
        assert ages_days(text)[0][0] == days

    @pytest.mark.parametrize("text", ["发烧2天了", "宝宝3月出生", "咳嗽一周了"])
    def test_durations_are_not_ages(self, text: str) -> None:
        assert ages_days(text) == []

    @pytest.mark.parametrize(("text", "value"), [("四十", 40), ("十五", 15), ("两", 2), ("半", 0.5), ("几", None),
                                                 ("十三三", None), ("十十", None), ("三三十", None)])
    def test_chinese_numbers(self, text: str, value: float | None) -> None:
        assert cn_number(text) == value


class TestTurns:
    def test_combination_across_turns(self, assessor: TriageAssessor) -> None:
        assert categories(assessor, "我胸口好痛", "请问还有别的症状吗？", "现在开始出冷汗了") == ["chest_pain_acs"]
        assert categories(assessor, "宝宝2个月大", "好的", "今天发烧38.5度") == ["infant_fever"]
        assert categories(assessor, "宝宝发烧38.5度", "宝宝多大了？", "宝宝才两个月") == ["infant_fever"]

    def test_latest_message_must_take_part(self, assessor: TriageAssessor) -> None:
        """The notice answers what the patient just said; it is not repeated on every later turn."""
        assert categories(assessor, "我胸口痛，出冷汗", "请马上拨打120", "好的谢谢") == []

    def test_only_recent_turns_complete_a_combination(self, assessor: TriageAssessor) -> None:
        turns = ["我胸口痛", "嗯", "昨晚没睡好", "嗯", "胃口也不好", "嗯", "今天早上出了冷汗"]
        assert "chest_pain_acs" not in categories(assessor, *turns)  # chest pain is 3 user turns back
        assert "chest_pain_acs" in categories(assessor, *turns[:2], *turns[4:])

    def test_assistant_turns_are_not_read(self, assessor: TriageAssessor) -> None:
        assert categories(assessor, "我有点咳嗽", "胸痛伴大汗要立即拨打120", "好的") == []

    def test_negation_in_an_earlier_turn_stays(self, assessor: TriageAssessor) -> None:
        assert "chest_pain_acs" not in categories(assessor, "没有胸痛", "嗯", "出冷汗")

    def test_system_and_empty_chats(self, assessor: TriageAssessor) -> None:
        assert assessor.assess([]).level == "none"
        assert assessor.assess([Message("system", "我胸口痛，出冷汗")]).level == "none"


class TestLongMessages:
    def test_a_long_consultation_does_not_combine_words_from_different_paragraphs(
        self, assessor: TriageAssessor
    ) -> None:
        """A 2,000-character consultation: an old penicillin allergy, dizziness on standing up in
        another paragraph, a worry about stroke, 没有说过不想活. No emergency, so no flag."""
        assert categories(assessor, LONG_CONSULTATION) == []

    def test_the_same_words_close_together_still_combine(self, assessor: TriageAssessor) -> None:
        assert "anaphylaxis" in categories(assessor, "对青霉素过敏，刚打完针，喘不上气")
        far = "对青霉素过敏。" + "平时饮食清淡，按时吃药，每天散步半小时。" * 5 + "今天爬楼梯后有点喘不上气"
        assert "anaphylaxis" not in categories(assessor, far)


class TestGeneralQuestions:
    @pytest.mark.parametrize(
        "text",
        [
            "心梗的早期症状有哪些？",
            "怎么预防中风",
            "什么是过敏性休克",
            "溺水急救的正确步骤是什么",
            "被蛇咬了怎么办？去露营前想了解一下",
        ],
    )
    def test_a_question_about_a_disease_in_general_reports_nothing(self, assessor: TriageAssessor, text: str) -> None:
        assert categories(assessor, text) == []

    @pytest.mark.parametrize(
        "text",
        [
            "我爸突然嘴歪了。中风的早期症状有哪些？",
            "中风有哪些症状？我妈现在说话不清楚",
            "刚才胸口痛出冷汗，心梗有什么表现",
        ],
    )
    def test_a_report_beside_the_question_still_fires(self, assessor: TriageAssessor, text: str) -> None:
        assert categories(assessor, text) != []


class TestReadings:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("血压210/130，头痛", "hypertensive_crisis"),
            ("高压200多，看东西模糊", "hypertensive_crisis"),
            ("血糖2.1，一身冷汗", "diabetic_emergency"),
            ("血压只有70多，脸色苍白，浑身湿冷", "shock_dehydration"),
        ],
    )
    def test_blood_pressure_and_sugar_readings(self, assessor: TriageAssessor, text: str, expected: str) -> None:
        assert expected in categories(assessor, text)

    @pytest.mark.parametrize("text", ["血压145/90，头有点痛", "血糖5.6，有点出汗", "血压120/80，头痛"])
    def test_ordinary_readings_raise_nothing(self, assessor: TriageAssessor, text: str) -> None:
        assert categories(assessor, text) == []
