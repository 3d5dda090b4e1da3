"""The red-flag rules measured on the project's own evaluation set (wingpt/safety/data/eval):
recall of the messages a triage nurse would send to emergency or urgent care, and false alarms on
those she would not, both on the part the rules were tuned on (dev) and on the part they were not
(heldout). Also: the one-pass prefix index finds exactly what each pattern's own search finds, and
reading only some sentences reads their terms as the whole reading does."""

from __future__ import annotations

import json
import random
import re

import pytest

from wingpt.safety import TriageAssessor, load_rules
from wingpt.safety.bench import LONG_CONSULTATION
from wingpt.safety.evaluate import MAX_FALSE_ALARM, MIN_RECALL, evaluate, load_cases, main
from wingpt.safety.normalize import Normalizer
from wingpt.safety.prefix import PrefixIndex, may_consume, prefixes
from wingpt.safety.scan import _CUES, Scanner


@pytest.fixture(scope="module")
def report():
    return evaluate(TriageAssessor(load_rules()), load_cases())


def test_the_set_is_large_and_broad_enough() -> None:
    cases = load_cases()
    positives = [c for c in cases if c.positive]
    negatives = [c for c in cases if not c.positive]
    assert len(cases) >= 300 and len(positives) >= 150 and len(negatives) >= 150
    assert len({c.group for c in positives}) >= 25, "presentations"
    assert {c.group for c in negatives} == {"general_knowledge", "negation", "history", "mild", "medicine_test"}
    assert any(len(c.turns) > 1 for c in positives), "earlier turns completing the picture"
    tuned_or_held = [c for c in cases if c.split in ("dev", "heldout")]
    heldout = sum(c.split == "heldout" for c in tuned_or_held) / len(tuned_or_held)
    assert 0.25 <= heldout <= 0.35


@pytest.mark.parametrize("split", ["dev", "heldout", "probe", "all"])
def test_recall_and_false_alarms_meet_the_thresholds(report, split: str) -> None:
    figures = report.summary()[split]
    misses = [" | ".join(c.turns) for c, _ in report.misses if split in ("all", c.split)]
    assert figures["recall"] >= MIN_RECALL, misses
    assert figures["false_alarm_rate"] <= MAX_FALSE_ALARM, misses


def test_probe2_recall_and_its_known_false_alarm(report) -> None:
    """probe2 (issue 17's second probe): every emergency caught; its one false alarm is left on the
    safe side (a bystander during a drowning types the same words), so any new one shows here.
    (百草枯中毒能救过来吗, the other one left there, names no one it happened to: since issue 18 it is
    read as the general question it is.) The overall false-alarm threshold above includes it."""
    figures = report.summary()["probe2"]
    misses = sorted(" | ".join(c.turns) for c, _ in report.misses if c.split == "probe2")
    assert figures["recall"] >= MIN_RECALL, misses
    assert misses == ["溺水了应该怎么急救"]


def test_probe3_question_tails_and_its_known_miss(report) -> None:
    """probe3 (issue 18): reports ending in 能治好吗, 严重吗, 还有救吗 are caught and the same tails on
    general questions, hypotheticals, histories and resolved choking stay quiet. Its one miss is a
    follow-up turn with no term of its own (我爸喝了农药 | 还能治好吗): a flag answers the latest
    message, and the turn before raised it already."""
    figures = report.summary()["probe3"]
    misses = sorted(" | ".join(c.turns) for c, _ in report.misses if c.split == "probe3")
    assert figures["false_alarm_rate"] == 0, misses
    assert misses == ["我爸喝了农药 | 还能治好吗"]


def test_the_command_prints_a_report_then_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["eval"] == "safety" and summary["passed"] is True
    assert set(summary) >= {"dev", "heldout", "probe", "all", "recall_by_presentation"}
    assert any(line.startswith("heldout  recall") for line in lines)


def test_a_threshold_not_met_fails_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--min-recall", "1.01"]) == 1
    assert '"passed": false' in capsys.readouterr().out


def test_the_prefix_index_finds_what_each_pattern_finds_alone() -> None:
    rules = load_rules()
    normalize = Normalizer(rules.typos)
    patterns = [(t.id, t.regex) for t in rules.terms.values() if t.regex is not None]
    patterns += [(cue, getattr(rules.context, cue)) for cue in _CUES]
    index = PrefixIndex(patterns)
    assert index.unindexed == [], "every shipped pattern has a bounded start"
    texts = [normalize(t) for c in load_cases() for t in c.turns]
    for text in [*texts, "".join(texts)]:
        expected = sorted((k, m.start(), m.end()) for k, rx in patterns for m in rx.finditer(text))
        assert sorted(index.find(text)) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("胸痛", {"胸痛"}),
        ("(?:胸口|心口)(?:很)?痛", {"胸口", "心口"}),
        ("头{gap}痛".replace("{gap}", "[^不]{0,3}"), {"头"}),
        ("(?:a|b)?c", {"ac", "bc", "c"}),
        ("抽搐(?<![眼皮]抽搐)", {"抽搐"}),
        ("次(?<=[0-9]次)", {"次"}),
        ("[^a]b", None),  # any character may start it: searched on its own
        ("(?=x)?y", {"y"}),
    ],
)
def test_prefixes_bound_where_a_match_can_start(pattern: str, expected: set[str] | None) -> None:
    found = prefixes(pattern)
    assert (None if found is None else set(found)) == expected


def test_the_prefix_index_in_spans_finds_what_starts_there() -> None:
    rules = load_rules()
    normalize = Normalizer(rules.typos)
    patterns = [(cue, getattr(rules.context, cue)) for cue in ("negation", "history", "present")]
    index = PrefixIndex(patterns)
    text = normalize("".join(t for c in load_cases() for t in c.turns))
    ends = [0] + [i + 1 for i, ch in enumerate(text) if ch in "?!。"]
    spans = [(ends[k], ends[k + 1]) for k in range(0, len(ends) - 1, 3)]
    expected = [hit for hit in index.find(text) if any(a <= hit[1] < b for a, b in spans)]
    found, apart = index.find_split(text, spans)
    assert not apart and expected and sorted(found) == sorted(expected)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("没有", False), ("胸.痛", True), ("[^a]", True), ("[^?!。]", False), ("不(?=。)", False), ("x[。]", True),
     (r"\d", True), ("(?:。){0}a", False)],
)
def test_may_consume_errs_on_the_safe_side(pattern: str, expected: bool) -> None:
    assert may_consume(pattern, "?!。") is expected


def test_reading_some_sentences_gives_their_terms_as_the_whole_reading() -> None:
    """The assessor reads only the sentences that hold a term some flag could still use; every
    mention of those terms must come out as a reading of the whole text gives it."""
    rules = load_rules()
    scanner = Scanner(rules)
    rnd = random.Random(5)
    messages = [t for c in load_cases() for t in c.turns]
    consultation = re.split(r"(?<=[。！？\n])", LONG_CONSULTATION)
    for _ in range(150):
        sentences = list(consultation)
        for _ in range(rnd.randint(1, 4)):
            sentences.insert(rnd.randrange(len(sentences)), rnd.choice(messages) + rnd.choice(["。", "？", "\n", ""]))
        found = scanner.find("".join(sentences))
        assert found is not None and found.sparse
        whole = scanner.read(found)
        for _ in range(3):
            terms = set(rnd.sample(sorted(found.terms), rnd.randint(1, 3)))
            part = scanner.read(found, terms)
            assert {t: part.get(t) for t in terms} == {t: whole.get(t) for t in terms}
