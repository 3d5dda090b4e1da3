"""The rules file as a hospital edits it: validated at load with errors that name the file, the
category or term and the field; reloaded without a code change; and the result's wire form."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from wingpt.chat_template import Message
from wingpt.safety import DISCLAIMER, RulesError, RulesWatcher, TriageAssessor, TriageResult, load_rules
from wingpt.safety.rules import DEFAULT_RULES


def shipped() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: dict[str, Any]) -> RulesError:
    with pytest.raises(RulesError) as info:
        load_rules(write(tmp_path / "rules.yaml", data))
    return info.value


def ask(assessor: TriageAssessor, text: str) -> TriageResult:
    return assessor.assess([Message("user", text)])


def test_default_rules_load() -> None:
    rules = load_rules()
    assert rules.source == DEFAULT_RULES
    assert rules.continue_generation is True
    assert len(rules.categories) >= 10
    assert {c.level for c in rules.categories} == {"urgent", "emergency"}


def test_a_round_tripped_copy_loads_the_same(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path / "copy.yaml", shipped()))
    assert [c.id for c in rules.categories] == [c.id for c in load_rules().categories]


class TestValidation:
    def test_missing_field(self, tmp_path: Path) -> None:
        data = shipped()
        del data["categories"][1]["notice"]
        error = load_error(tmp_path, data)
        assert (error.where, error.field) == ("category 'stroke_signs'", "notice")
        assert str(error) == f"{tmp_path / 'rules.yaml'}: category 'stroke_signs', field 'notice': missing"

    def test_bad_regex(self, tmp_path: Path) -> None:
        data = shipped()
        data["terms"]["chest_pain"][2] = "(心绞痛"
        error = load_error(tmp_path, data)
        assert (error.where, error.field) == ("term 'chest_pain'", "patterns[2]")
        assert "bad regex '(心绞痛'" in error.problem and "missing )" in error.problem

    def test_pattern_matching_everything(self, tmp_path: Path) -> None:
        data = shipped()
        data["terms"]["fever"][0] = "发烧|"
        error = load_error(tmp_path, data)
        assert error.field == "patterns[0]" and "matches empty text" in error.problem

    def test_pattern_matching_only_empty_text_somewhere(self, tmp_path: Path) -> None:
        # (?=胸痛) finds nothing in "" but matches empty text before every 胸痛: a mention of nothing
        data = shipped()
        data["terms"]["fever"][0] = "(?=发烧)"
        error = load_error(tmp_path, data)
        assert error.field == "patterns[0]" and "can match empty text" in error.problem

    def test_unknown_level(self, tmp_path: Path) -> None:
        data = shipped()
        data["categories"][0]["level"] = "critical"
        error = load_error(tmp_path, data)
        assert (error.where, error.field) == ("category 'chest_pain_acs'", "level")
        assert error.problem == "unknown level 'critical'; expected one of urgent, emergency"

    def test_unknown_word_list_in_a_pattern(self, tmp_path: Path) -> None:
        data = shipped()
        data["terms"]["chest_pain"][1] = "{chset}{gap}(?:痛|疼)"
        error = load_error(tmp_path, data)
        assert (error.where, error.field) == ("term 'chest_pain'", "patterns[1]")
        assert error.problem == "unknown word list '{chset}'; did you mean '{chest}'?"

    def test_word_list_must_be_a_list_of_words(self, tmp_path: Path) -> None:
        data = shipped()
        data["lexicon"]["chest"] = "胸口"
        error = load_error(tmp_path, data)
        assert (error.where, error.field) == ("lexicon 'chest'", "words")

    @pytest.mark.parametrize("value", [-1, "80", True, 20000])
    def test_combine_within_is_a_number_of_characters(self, tmp_path: Path, value: Any) -> None:
        data = shipped()
        data["combine_within"] = value
        error = load_error(tmp_path, data)
        assert (error.where, error.field) == ("top level", "combine_within")

    def test_reading_out_of_range(self, tmp_path: Path) -> None:
        data = shipped()
        data["terms"]["bp_crisis"][0] = {"systolic_at_least": 500}
        error = load_error(tmp_path, data)
        assert (error.where, error.field) == ("term 'bp_crisis'", "patterns[0].systolic_at_least")

    def test_duplicate_category_id(self, tmp_path: Path) -> None:
        data = shipped()
        data["categories"].append(dict(data["categories"][1]))
        error = load_error(tmp_path, data)
        last = len(data["categories"]) - 1
        assert (error.where, error.field) == ("category 'stroke_signs'", "id")
        assert error.problem == f"duplicate id: categories[1] and categories[{last}]"

    def test_duplicate_term_key(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        text = DEFAULT_RULES.read_text(encoding="utf-8").replace("  fever:\n", "  fever: [发热]\n  fever:\n", 1)
        path.write_text(text, encoding="utf-8")
        with pytest.raises(RulesError) as info:
            load_rules(path)
        assert info.value.field == "fever" and info.value.problem.startswith("duplicate key (first on line ")

    def test_unknown_term_suggests_the_closest(self, tmp_path: Path) -> None:
        data = shipped()
        data["categories"][0]["when"][0] = ["chest_pian", "sweating"]
        error = load_error(tmp_path, data)
        assert error.field == "when[0]"
        assert error.problem == "unknown term 'chest_pian'; did you mean 'chest_pain'?"

    def test_unknown_field_catches_typos(self, tmp_path: Path) -> None:
        data = shipped()
        data["categories"][0]["notcie"] = data["categories"][0].pop("notice")
        assert load_error(tmp_path, data).field == "notcie"

    def test_unknown_superseded_category(self, tmp_path: Path) -> None:
        data = shipped()
        data["categories"][0]["supersedes"] = ["chest_pains"]
        error = load_error(tmp_path, data)
        assert (error.field, error.problem) == ("supersedes[0]", "unknown category 'chest_pains'")

    @pytest.mark.parametrize(
        ("items", "problem"),
        [
            ([{"temperature_at_least": 50}], "must be a number from 35.0 to 43.0, not 50"),
            ([{"age_weeks_under": 3}], "unknown number item 'age_weeks_under'"),
            ([{"age_days_under": 90}, {"age_years_under": 1}], "a term takes one 'age_years_under' item"),
        ],
    )
    def test_bad_number_item(self, tmp_path: Path, items: list[dict[str, Any]], problem: str) -> None:
        data = shipped()
        data["terms"]["hot"] = items
        error = load_error(tmp_path, data)
        assert error.where == "term 'hot'" and problem in error.problem

    def test_resolves_is_true_or_false(self, tmp_path: Path) -> None:
        data = shipped()
        data["terms"]["choked"] = {"patterns": ["噎住"], "resolves": "yes"}
        error = load_error(tmp_path, data)
        assert (error.where, error.field, error.problem) == ("term 'choked'", "resolves", "must be true or false")

    def test_a_file_without_the_report_and_resolution_cues_still_loads(self, tmp_path: Path) -> None:
        """Older hospital files have no `report`, `hypothetical` or `resolved`: a general question
        then silences its sentence as before, and nothing is read as resolved."""
        data = shipped()
        for name in ("report", "hypothetical", "resolved"):
            del data["context"][name]
        assessor = TriageAssessor(load_rules(write(tmp_path / "rules.yaml", data)))
        assert not ask(assessor, "我爸喝了百草枯，能治好吗").flagged
        assert ask(assessor, "吃饭噎住了，喝口水就好了").flagged

    def test_top_level_types(self, tmp_path: Path) -> None:
        data = shipped()
        data["continue_generation"] = "sometimes"
        assert load_error(tmp_path, data).field == "continue_generation"

    def test_yaml_syntax_error_names_the_line(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text("version: 1\ncategories: [\n", encoding="utf-8")
        with pytest.raises(RulesError, match=r"line \d+.*not valid YAML"):
            load_rules(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(RulesError, match="cannot be read"):
            load_rules(tmp_path / "absent.yaml")


class TestEditingAndReloading:
    def test_an_edit_takes_effect_on_reload(self, tmp_path: Path) -> None:
        data = shipped()
        data["terms"]["head_injury"] = ["头部(?:外伤|撞伤)", "摔到头"]
        data["categories"].append(
            {"id": "head_injury", "name": "头部外伤", "level": "urgent", "when": ["head_injury"], "notice": "请就医。"}
        )
        data["continue_generation"] = False
        rules = load_rules(write(tmp_path / "hospital.yaml", data))
        result = ask(TriageAssessor(rules), "老人摔到头了")
        assert (result.level, result.categories, result.notice) == ("urgent", ["head_injury"], "请就医。")
        assert rules.continue_generation is False

    def test_traditional_characters_in_the_file_still_match(self, tmp_path: Path) -> None:
        data = shipped()
        data["terms"]["head_injury"] = ["頭部外傷"]
        data["categories"].append(
            {"id": "head_injury", "name": "头部外伤", "level": "urgent", "when": ["head_injury"], "notice": "请就医。"}
        )
        assessor = TriageAssessor(load_rules(write(tmp_path / "rules.yaml", data)))
        assert ask(assessor, "头部外伤").categories == ["head_injury"]

    def test_a_lay_word_added_to_a_word_list_reaches_every_pattern_using_it(self, tmp_path: Path) -> None:
        data = shipped()
        assert ask(TriageAssessor(load_rules(write(tmp_path / "before.yaml", data))), "心尖疼，出冷汗").level == "none"
        data["lexicon"]["chest"].append("心尖")
        result = ask(TriageAssessor(load_rules(write(tmp_path / "after.yaml", data))), "心尖疼，出冷汗")
        assert result.categories == ["chest_pain_acs"]

    def test_watcher_reloads_changed_file_and_keeps_rules_on_a_bad_edit(self, tmp_path: Path) -> None:
        path = write(tmp_path / "rules.yaml", shipped())
        watcher = RulesWatcher(path, check_every_s=0)
        assert ask(watcher.assessor(), "头部外伤").level == "none"

        data = shipped()
        data["categories"][0]["when"].append("face_droop")  # a visible change: face droop now also ACS
        write(path, data)
        os.utime(path, ns=(1, 2_000_000_000))
        assert "chest_pain_acs" in ask(watcher.assessor(), "嘴歪了").categories
        assert watcher.last_error is None

        path.write_text("version: 1\ncategories: [\n", encoding="utf-8")
        os.utime(path, ns=(1, 3_000_000_000))
        assessor = watcher.assessor()
        assert "chest_pain_acs" in ask(assessor, "嘴歪了").categories  # the previous rules stay in force
        assert isinstance(watcher.last_error, RulesError)

    def test_watcher_refuses_to_start_on_an_invalid_file(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.yaml"
        path.write_text("version: 2\n", encoding="utf-8")
        with pytest.raises(RulesError):
            RulesWatcher(path)


class TestResult:
    def test_json_is_compact_and_keeps_chinese(self) -> None:
        result = ask(TriageAssessor(load_rules()), "我想自杀")
        body = result.to_json()
        assert " " not in body.split('"notice"')[0] and "\\u" not in body
        assert json.loads(body) == {"level": "emergency", "categories": ["suicide_self_harm"], "notice": result.notice}
        assert "12356" in result.notice
        assert result.flagged

    def test_evidence_stays_out_of_the_wire_form(self) -> None:
        result = ask(TriageAssessor(load_rules()), "我想自杀")
        assert result.evidence == {"suicide_self_harm": ["自杀"]}
        assert "evidence" not in json.loads(result.to_json())

    def test_no_flag(self) -> None:
        assert not TriageResult().flagged
        assert TriageResult().to_json() == '{"level":"none","categories":[],"notice":""}'

    def test_disclaimer_follows_the_model_card(self) -> None:
        for phrase in ("仅供参考", "不能替代", "医疗专业人员", "120"):
            assert phrase in DISCLAIMER
