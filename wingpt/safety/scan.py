"""Finding the terms a patient's message asserts *now*: not negated, not past history.

A keyword hit is only half the job: 没有胸痛, 去年中风过 and 中风的前兆有哪些 contain the keywords
of an emergency. Each hit (a "mention") is read in its clause: a negation word with only filler
words before it cancels it, the cancellation carries along a list (否认胸痛、胸闷及大汗), a
history word earlier in the clause makes it past unless the clause also speaks of now, and a
sentence that asks about a disease in general (有哪些症状, 怎么预防, 能治好吗) and says nothing of now
and names no one it happened to (我爸, 孩子) reports no symptom; a choking episode followed by
its resolution (喝口水就好了) is over. Words
that contain a negation character but are themselves symptoms (叫不醒, 说不出话, 没精神) are
never read as negations, because every term hit masks the cues inside it.

A long message has a few hundred mentions, each read on every request, so the reading is one
loop over plain (term, start, end) tuples with the clause lookups inline: a method call or an
object per mention would cost more than the reading itself.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import accumulate
from operator import itemgetter

from wingpt.safety.extract import ages_days, glucose_values, systolic_pressures, temperatures
from wingpt.safety.normalize import Normalizer
from wingpt.safety.prefix import AnchoredMatch, PrefixIndex
from wingpt.safety.rules import Rules, Term

# Every alternative starts with a character, so the search skips ordinary text fast: a look-behind
# first would be tried at every position. A full stop between digits (39.5) ends no clause.
_PUNCTUATION = re.compile(r"[,!?;。…~:]|\.(?:(?!\d)|(?<!\d\.))")
_LIST_JOINERS = re.compile(r"(?:、|和|及|以及|与|或|或者|跟|/|\+)?")
_SENTENCE_END = re.compile(r"[?!。]")
_READINGS = (  # number items of a term beside temperature and age: (reader, Term field, test factory)
    (systolic_pressures, "systolic_at_least", lambda limit: lambda v: v >= limit),
    (systolic_pressures, "systolic_under", lambda limit: lambda v: v < limit),
    (glucose_values, "glucose_under", lambda limit: lambda v: v < limit),
    (glucose_values, "glucose_at_least", lambda limit: lambda v: v >= limit),
)
# Context cues found by the index beside the terms; the rest of Context is matched at a position.
_CUES = ("negation", "not_negation", "history", "present", "recurrence", "general_question", "general_intent",
         "clause_breaks")
_Mention = tuple[Term, int, int]  # (term, start, end) in the normalised text
_START, _END = itemgetter(1), itemgetter(2)
_NO_CUES: list[tuple[str, int, int]] = []


class Scanner:
    """Text -> {term id: [(matched snippet, start)]} for the terms the text asserts as current."""

    def __init__(self, rules: Rules) -> None:
        self._context = rules.context
        self._normalize = Normalizer(rules.typos)
        terms = rules.terms.values()
        searched: list[tuple[Term | str, re.Pattern[str]]] = [(t, t.regex) for t in terms if t.regex is not None]
        searched += [(cue, getattr(rules.context, cue)) for cue in _CUES]
        self._index = PrefixIndex(searched, apart=str)
        self._negation_after = AnchoredMatch(rules.context.negation_after)
        self._history_after = AnchoredMatch(rules.context.history_after)
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
        mentions, cues = self._index.find_split(text)
        numbers, ages = self._numbers(text)
        if numbers or ages:
            # By start, longer first at the same start: two stable sorts with C keys, as
            # sort(key=lambda m: (m.start, -m.end)) would order them, for less.
            mentions += numbers
            mentions += ages
            mentions.sort(key=_END, reverse=True)
            mentions.sort(key=_START)
        if not mentions:
            return {}
        return self._read(text, cues, mentions, {id(m) for m in ages} if ages else None)

    def _numbers(self, text: str) -> tuple[list[_Mention], list[_Mention]]:
        """Mentions from numbers read in the text: (contextual ones, ages). Ages are facts about the
        patient: negation and history do not apply to them."""
        mentions: list[_Mention] = []
        if self._temperature_terms:
            for value, start, end in temperatures(text):
                mentions += [(t, start, end) for t, at_least in self._temperature_terms if value >= at_least]
        ages: list[_Mention] = []
        if self._age_terms:
            for days, start, end in ages_days(text):
                ages += [(t, start, end) for t, under in self._age_terms if days < under]
        readings: dict[object, list[tuple[float, int, int]]] = {}
        for reader, term, test in self._readings:
            if reader not in readings:
                readings[reader] = reader(text)
            mentions += [(term, start, end) for value, start, end in readings[reader] if test(value)]
        return mentions, ages

    def _read(
        self,
        text: str,
        cues: dict[str, list[tuple[str, int, int]]],
        mentions: list[_Mention],
        facts: set[int] | None,
    ) -> dict[str, list[tuple[str, int]]]:
        """The mentions the text asserts as current, by term id. Cues are grouped by clause first,
        so each mention only looks at the cues of its own clause. `facts`: ids of the mentions
        (ages) that are current whatever their clause says."""
        ctx = self._context
        get = cues.get
        breaks = [m.end() for m in _PUNCTUATION.finditer(text)]
        if extra := get("clause_breaks"):
            breaks += [end for _, _, end in extra]
            breaks.sort()
        clauses = [0, *breaks]

        # A cue inside a term, or inside a not-a-negation word (是不是, 不停), is no cue. Terms are
        # sorted by start: a cue [s, e) overlaps one iff some term starting before e ends after s
        # (no pattern matches empty text: the rules loader checks it).
        term_starts = list(map(_START, mentions))
        term_reach = list(accumulate(map(_END, mentions), max))
        plain = get("not_negation", _NO_CUES)
        plain_starts = list(map(_START, plain))
        plain_ends = list(map(_END, plain))  # one pattern's matches: ends increase with starts

        def in_term(start: int, end: int) -> bool:
            j = bisect_left(term_starts, end)
            return j > 0 and term_reach[j - 1] > start

        def masked(start: int, end: int) -> bool:
            if in_term(start, end):
                return True
            j = bisect_left(plain_starts, end)
            return j > 0 and plain_ends[j - 1] > start

        negation_cues, history_cues = get("negation", _NO_CUES), get("history", _NO_CUES)
        general_cues = get("general_question", _NO_CUES) + get("general_intent", _NO_CUES)
        negations: dict[int, list[int]] = {}  # clause -> ends of its negation cues
        for _, start, end in negation_cues:
            if not masked(start, end):
                negations.setdefault(bisect_right(clauses, start) - 1, []).append(end)
        histories: dict[int, list[int]] = {}  # clause -> starts of its history cues
        for _, start, end in history_cues:
            if not masked(start, end):
                histories.setdefault(bisect_right(clauses, start) - 1, []).append(start)
        present = get("present", _NO_CUES)
        present_clauses = {bisect_right(clauses, start) - 1 for _, start, _ in present}
        general: set[int] = set()
        sentences: list[int] = []
        unmasked = [(name, start) for name, start, end in general_cues if not in_term(start, end)]
        if unmasked:
            sentences = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
            if any(name == "general_intent" for name, _ in unmasked):
                general = set(range(len(sentences)))  # learning, not reporting: every sentence
            else:
                general = {bisect_right(sentences, start) - 1 for _, start in unmasked}
            general -= {bisect_right(sentences, start) - 1 for _, start, _ in present}
            if general:
                # A named person as the subject reports what happened to them, whatever question
                # ends the sentence (我爸喝了农药，能治好吗), unless the sentence is a hypothetical.
                # Searched only here and only in those sentences: most messages ask nothing in
                # general, and the report patterns (look-behinds first) are tried at every character.
                report, hypothetical = ctx.report.search, ctx.hypothetical.search
                ends = [*sentences[1:], len(text)]
                general -= {
                    i for i in general
                    if report(text, sentences[i], ends[i]) and not hypothetical(text, sentences[i], ends[i])
                }
        recurrence = get("recurrence")
        last_recurrence = max(start for _, start, _ in recurrence) if recurrence else -1

        fillers = ctx.negation_fillers.fullmatch
        na, ha = self._negation_after, self._history_after
        na_match, na_first, na_one, na_two = na.match, na.first, na.one, na.two
        ha_match, ha_first, ha_one, ha_two = ha.match, ha.first, ha.one, ha.two
        list_gap = self._list_gap
        last_resolved: int | None = None  # start of the last resolution (就好了), searched on first need
        negated: dict[int, list[int]] = {}  # clause -> ends of its negated mentions, in order
        found: dict[str, list[tuple[str, int]]] = {}
        for mention in mentions:
            term, start, end = mention
            if facts is not None and id(mention) in facts:
                found.setdefault(term.id, []).append((text[start:end], start))
                continue
            clause = bisect_right(clauses, start) - 1
            if general and bisect_right(sentences, start) - 1 in general:
                continue  # a question about the disease in general, not a report
            # Negated: a negation cue with only fillers up to the mention, one right after it in the
            # same clause, or a list after a negation (否认胸痛、胸闷及大汗: joiners and fillers only).
            # Plain loops with a flag: a generator per mention would cost more than the tests.
            negative = False
            if clause in negations:
                for cue_end in negations[clause]:
                    if cue_end <= start and fillers(text, cue_end, start):
                        negative = True
                        break
            after = text[end : end + 1]
            if not negative and after in na_first and (after in na_one or text[end : end + 2] in na_two):
                negative = na_match(text, end) is not None and bisect_right(clauses, end) - 1 == clause
            if not negative and clause in negated:
                for before in negated[clause]:
                    if start <= before or list_gap(text, before, start):
                        negative = True
                        break
            if negative:
                negated.setdefault(clause, []).append(end)
                continue
            if term.resolves:
                if last_resolved is None:
                    last_resolved = max((m.start() for m in ctx.resolved.finditer(text)), default=-1)
                if last_resolved >= end and last_recurrence < last_resolved:
                    continue  # an episode that is over (噎住了，喝口水就好了), unless it came back
            if not (term.keep_history or clause in present_clauses or last_recurrence >= end):
                past = False
                if clause in histories:
                    for cue_start in histories[clause]:
                        if cue_start < start:
                            past = True
                            break
                if past or (
                    after in ha_first and (after in ha_one or text[end : end + 2] in ha_two)
                    and ha_match(text, end) is not None
                ):
                    continue  # past history
            if (known := found.get(term.id)) is None:
                found[term.id] = [(text[start:end], start)]
            else:
                known.append((text[start:end], start))
        return found

    def _list_gap(self, text: str, start: int, end: int) -> bool:
        joiner = _LIST_JOINERS.match(text, start, end)
        return joiner is not None and bool(self._context.negation_fillers.fullmatch(text, joiner.end(), end))
