"""Finding the terms a patient's message asserts *now*: not negated, not past history.

A keyword hit is only half the job: 没有胸痛, 去年中风过 and 中风的前兆有哪些 contain the keywords
of an emergency. Each hit (a "mention") is read in its clause: a negation word with only filler
words before it cancels it, the cancellation carries along a list (否认胸痛、胸闷及大汗), a
history word earlier in the clause makes it past unless the clause also speaks of now, and a
sentence that asks about a disease in general (有哪些症状, 怎么预防) and says nothing of now
reports no symptom. Words
that contain a negation character but are themselves symptoms (叫不醒, 说不出话, 没精神) are
never read as negations, because every term hit masks the cues inside it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from operator import attrgetter
from typing import NamedTuple

from wingpt.safety.extract import ages_days, glucose_values, systolic_pressures, temperatures
from wingpt.safety.normalize import Normalizer
from wingpt.safety.prefix import AnchoredMatch, PrefixIndex
from wingpt.safety.rules import Context, Rules, Term

# Every alternative starts with a character, so the search skips ordinary text fast: a look-behind
# first would be tried at every position. A full stop between digits (39.5) ends no clause.
_PUNCTUATION = re.compile(r"[,!?;。…~:]|\.(?:(?!\d)|(?<!\d\.))")
_LIST_JOINERS = re.compile(r"(?:、|和|及|以及|与|或|或者|跟|/|\+)?")
_SENTENCE_END = re.compile(r"[?!。]")
# Context cues found by the index beside the terms; the rest of Context is matched at a position.
_READINGS = (  # number items of a term beside temperature and age: (reader, Term field, test factory)
    (systolic_pressures, "systolic_at_least", lambda limit: lambda v: v >= limit),
    (systolic_pressures, "systolic_under", lambda limit: lambda v: v < limit),
    (glucose_values, "glucose_under", lambda limit: lambda v: v < limit),
    (glucose_values, "glucose_at_least", lambda limit: lambda v: v >= limit),
)
_CUES = ("negation", "not_negation", "history", "present", "recurrence", "general_question", "general_intent",
         "clause_breaks")


class Mention(NamedTuple):  # a tuple: a long message has hundreds, built on every request
    term: Term
    start: int
    end: int
    contextual: bool = True  # ages are facts about the patient; negation and history do not apply


_new_mention = tuple.__new__  # Mention(...) runs a Python-level __new__; this builds the same tuple in C
_START, _END = attrgetter("start"), attrgetter("end")


class Scanner:
    """Text -> {term id: [(matched snippet, start)]} for the terms the text asserts as current."""

    def __init__(self, rules: Rules) -> None:
        self._context = rules.context
        self._normalize = Normalizer(rules.typos)
        terms = rules.terms.values()
        searched: list[tuple[Term | str, re.Pattern[str]]] = [(t, t.regex) for t in terms if t.regex is not None]
        searched += [(cue, getattr(rules.context, cue)) for cue in _CUES]
        self._index = PrefixIndex(searched)
        self._after = _After(AnchoredMatch(rules.context.negation_after), AnchoredMatch(rules.context.history_after))
        self._temperature_terms = [(t, t.temperature_at_least) for t in terms if t.temperature_at_least is not None]
        self._age_terms = [(t, t.age_days_under) for t in terms if t.age_days_under is not None]
        # (reader, term, test): readings of a kind (blood pressure, blood sugar) that make the term present
        self._readings: list[tuple[Callable[[str], list[tuple[float, int, int]]], Term, Callable[[float], bool]]] = []
        for reader, attr, make_test in _READINGS:
            for term in terms:
                if (limit := getattr(term, attr)) is not None:
                    self._readings.append((reader, term, make_test(limit)))

    def scan(self, raw: str) -> dict[str, list[tuple[str, int]]]:
        text = self._normalize(raw)
        mentions: list[Mention] = []
        cues: dict[str, list[tuple[int, int]]] = {}
        for key, start, end in self._index.find(text):
            if key.__class__ is str:
                cues.setdefault(key, []).append((start, end))
            else:
                mentions.append(_new_mention(Mention, (key, start, end, True)))
        mentions += self._numbers(text)
        if not mentions:
            return {}
        # By start, longer first at the same start: two stable sorts with C keys, as
        # sort(key=lambda m: (m.start, -m.end)) would order them, for less.
        mentions.sort(key=_END, reverse=True)
        mentions.sort(key=_START)
        reader = _ClauseReader(text, self._context, self._after, cues, mentions)
        found: dict[str, list[tuple[str, int]]] = {}
        for mention in reader.current():
            found.setdefault(mention.term.id, []).append((text[mention.start : mention.end], mention.start))
        return found

    def _numbers(self, text: str) -> list[Mention]:
        mentions: list[Mention] = []
        if self._temperature_terms:
            for value, start, end in temperatures(text):
                mentions += [Mention(t, start, end) for t, at_least in self._temperature_terms if value >= at_least]
        if self._age_terms:
            for days, start, end in ages_days(text):
                mentions += [Mention(t, start, end, contextual=False) for t, under in self._age_terms if days < under]
        readings: dict[object, list[tuple[float, int, int]]] = {}
        for reader, term, test in self._readings:
            if reader not in readings:
                readings[reader] = reader(text)
            mentions += [Mention(term, start, end) for value, start, end in readings[reader] if test(value)]
        return mentions


class _After(NamedTuple):
    """The context patterns read right after a mention (negation_after, history_after)."""

    negation: AnchoredMatch
    history: AnchoredMatch


class _ClauseReader:
    """Decides, for one normalised text, which mentions are current. Cues are grouped by clause
    once, so each mention only looks at the few cues of its own clause."""

    def __init__(
        self,
        text: str,
        context: Context,
        after: _After,
        cues: dict[str, list[tuple[int, int]]],
        mentions: list[Mention],
    ) -> None:
        self.text, self.ctx, self.after, self.mentions = text, context, after, mentions
        breaks = [m.end() for m in _PUNCTUATION.finditer(text)] + [end for _, end in cues.get("clause_breaks", ())]
        self.clause_starts = [0, *sorted(breaks)]
        self.sentence_starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
        in_term = bytearray(len(text))  # 1 where a term stands: a cue inside a term is no cue
        for m in mentions:
            in_term[m.start : m.end] = b"\x01" * (m.end - m.start)
        masked = bytearray(in_term)  # and where a not-a-negation word stands (是不是, 不停)
        for start, end in cues.get("not_negation", ()):
            masked[start:end] = b"\x01" * (end - start)
        self.negations = self._by_clause(cues.get("negation", ()), masked)
        self.histories = self._by_clause(cues.get("history", ()), masked)
        present = cues.get("present", ())
        self.present_clauses = {self.clause(start) for start, _ in present}
        present_sentences = {self.sentence(start) for start, _ in present}
        unmasked = [
            (name, start) for name in ("general_question", "general_intent") for start, end in cues.get(name, ())
            if in_term.find(1, start, end) < 0
        ]
        if any(name == "general_intent" for name, _ in unmasked):
            general = set(range(len(self.sentence_starts)))  # learning, not reporting: every sentence
        else:
            general = {self.sentence(start) for _, start in unmasked}
        self.general_sentences = general - present_sentences
        self.last_recurrence = max((start for start, _ in cues.get("recurrence", ())), default=-1)

    def clause(self, position: int) -> int:
        return bisect_right(self.clause_starts, position) - 1

    def sentence(self, position: int) -> int:
        return bisect_right(self.sentence_starts, position) - 1

    def _by_clause(self, spans, masked: bytearray) -> dict[int, list[tuple[int, int]]]:
        """Cue spans by clause, leaving out those inside a term or a not-a-negation word."""
        cues: dict[int, list[tuple[int, int]]] = {}
        for start, end in spans:
            if masked.find(1, start, end) < 0:
                cues.setdefault(self.clause(start), []).append((start, end))
        return cues

    def current(self) -> list[Mention]:
        negated: dict[int, list[Mention]] = {}
        current: list[Mention] = []
        clauses, sentences, general = self.clause_starts, self.sentence_starts, self.general_sentences
        for mention in self.mentions:  # bisect_right inline: a method call per mention costs more than it
            clause = bisect_right(clauses, mention.start) - 1
            if not mention.contextual:
                current.append(mention)
            elif general and bisect_right(sentences, mention.start) - 1 in general:
                continue  # a question about the disease in general, not a report
            elif self._negated(mention, clause, negated.get(clause, [])):
                negated.setdefault(clause, []).append(mention)
            elif mention.term.keep_history or not self._past(mention, clause):
                current.append(mention)
        return current

    def _negated(self, mention: Mention, clause: int, negated_before: list[Mention]) -> bool:
        text, fillers = self.text, self.ctx.negation_fillers
        for _, end in self.negations.get(clause, ()):
            if end <= mention.start and fillers.fullmatch(text, end, mention.start):
                return True
        if self.after.negation(text, mention.end) and self.clause(mention.end) == clause:
            return True
        # A list after a negation: 否认胸痛、胸闷及大汗 (joiners and fillers only between items).
        return any(
            mention.start <= earlier.end or self._list_gap(earlier.end, mention.start) for earlier in negated_before
        )

    def _list_gap(self, start: int, end: int) -> bool:
        joiner = _LIST_JOINERS.match(self.text, start, end)
        return joiner is not None and bool(self.ctx.negation_fillers.fullmatch(self.text, joiner.end(), end))

    def _past(self, mention: Mention, clause: int) -> bool:
        if clause in self.present_clauses or self.last_recurrence >= mention.end:
            return False
        historical = any(start < mention.start for start, _ in self.histories.get(clause, ()))
        return historical or bool(self.after.history(self.text, mention.end))

