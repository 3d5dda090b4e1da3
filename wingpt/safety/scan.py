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

Finding and reading are two steps (`find`, `read`) because reading only ever takes mentions away:
the assessor finds the terms first, and reads only the sentences that hold a term some flag could
still use. A long consultation with a few such words is then read in a few sentences, not whole.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection
from dataclasses import dataclass
from itertools import accumulate, compress, repeat
from operator import attrgetter, itemgetter

from wingpt.safety.extract import ages_days, glucose_values, systolic_pressures, temperatures
from wingpt.safety.normalize import Normalizer
from wingpt.safety.prefix import AnchoredMatch, PrefixIndex, may_consume
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
# Cues that only bear on their own clause or sentence, so they are searched only in the sentences
# read; the others bear on the whole message (general_intent, recurrence) or make its clauses.
_LOCAL_CUES = ("negation", "not_negation", "history", "present", "general_question")
_SENTENCE_ENDS = "?!。"  # what _SENTENCE_END finds
# Sentences to read covering more of the text than this: one search of the whole text is cheaper.
_WHOLE_TEXT_SHARE = 0.5
# A text shorter than this (nearly every chat turn) is searched for terms and cues in one pass and
# read whole: two passes and picking sentences cost more than they save on it.
_LONG_TEXT = 400
# A long text with a hit every this many characters or more often needs most of its sentences read:
# it is read whole, without working out which sentences.
_DENSE_HITS = 20
_Mention = tuple[Term, int, int]  # (term, start, end) in the normalised text
_TERM, _START, _END, _ID = itemgetter(0), itemgetter(1), itemgetter(2), attrgetter("id")
_NO_CUES: list[tuple[str, int, int]] = []


@dataclass(frozen=True, slots=True)
class Found:
    """A message's hits before they are read in context (`Scanner.find`). `terms`: the ids of the
    terms hit; a term not among them cannot be current, since reading only takes mentions away."""

    text: str  # normalised
    mentions: list[_Mention]  # every term hit and number reading, by start (longer first at a start)
    cues: dict[str, list[tuple[str, int, int]]]  # the cues searched in the whole text
    facts: set[int] | None  # ids of the mentions (ages) that are current whatever their clause says
    ids: list[str]  # the term id of each mention
    terms: frozenset[str]
    whole: bool  # a short text: `cues` holds every cue, and it is read whole
    sparse: bool  # a long text with few hits: worth reading only the sentences that matter


class Scanner:
    """Text -> {term id: [(matched snippet, start)]} for the terms the text asserts as current."""

    def __init__(self, rules: Rules) -> None:
        self._context = rules.context
        self._normalize = Normalizer(rules.typos)
        terms = rules.terms.values()
        searched: list[tuple[Term | str, re.Pattern[str]]] = [(t, t.regex) for t in terms if t.regex is not None]
        cues = [(cue, getattr(rules.context, cue)) for cue in _CUES]
        # A local cue is searched in a sentence alone only if no match of it can hold a sentence
        # end (it would then start in one sentence and end in the next); else with the terms.
        local = [(cue, p) for cue, p in cues if cue in _LOCAL_CUES and not may_consume(p.pattern, _SENTENCE_ENDS)]
        self._index = PrefixIndex(searched + cues, apart=str)  # short texts: everything at once
        self._term_index = PrefixIndex(searched + [(cue, p) for cue, p in cues if (cue, p) not in local], apart=str)
        self._local_index = PrefixIndex(local, apart=str)
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
        """Every term the text asserts as current: `read` of `find`, all of it."""
        found = self.find(raw)
        return {} if found is None else self.read(found)

    def find(self, raw: str) -> Found | None:
        """The term hits and number readings of a text, and the cues that bear on all of it; None
        when nothing was hit."""
        text = self._normalize(raw)
        whole = len(text) < _LONG_TEXT
        mentions, cues = (self._index if whole else self._term_index).find_split(text)
        numbers, ages = self._numbers(text)
        if numbers or ages:
            # By start, longer first at the same start: two stable sorts with C keys, as
            # sort(key=lambda m: (m.start, -m.end)) would order them, for less.
            mentions += numbers
            mentions += ages
            mentions.sort(key=_END, reverse=True)
            mentions.sort(key=_START)
        if not mentions:
            return None
        facts = {id(m) for m in ages} if ages else None
        ids = list(map(_ID, map(_TERM, mentions)))
        sparse = not whole and len(mentions) * _DENSE_HITS < len(text)
        return Found(text, mentions, cues, facts, ids, frozenset(ids), whole, sparse)

    def read(self, found: Found, terms: Collection[str] | None = None) -> dict[str, list[tuple[str, int]]]:
        """The current mentions, by term id. With `terms`, only the sentences holding a mention of
        one of them are read (the local cues searched there only): every mention of those terms is
        read exactly as in the whole text, since a mention's reading depends on its own clause and
        sentence and on cues searched in the whole text; other terms may then be left out. A short
        text, one dense with hits, or one whose sentences to read make up most of it is read whole."""
        text, mentions = found.text, found.mentions
        if found.whole:
            return self._read(text, found.cues, mentions, mentions, found.facts)
        if terms is None or not found.sparse:
            return self._read(text, found.cues | self._local_index.find_split(text)[1], mentions, mentions, found.facts)
        sentences = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
        starts = list(map(_START, mentions))
        wanted = sorted(set(map(bisect_right, repeat(sentences), compress(starts, map(terms.__contains__, found.ids)))))
        if not wanted:
            return {}
        wanted = [k - 1 for k in wanted]
        ends = [*sentences[1:], len(text)]
        spans: list[tuple[int, int]] = []
        for k in wanted:  # neighbouring sentences as one span
            if spans and spans[-1][1] == sentences[k]:
                spans[-1] = (spans[-1][0], ends[k])
            else:
                spans.append((sentences[k], ends[k]))
        if sum(end - begin for begin, end in spans) > _WHOLE_TEXT_SHARE * len(text):
            cues = found.cues | self._local_index.find_split(text)[1]
            return self._read(text, cues, mentions, mentions, found.facts, (sentences, None, None))
        read = [m for begin, end in spans for m in mentions[bisect_left(starts, begin) : bisect_left(starts, end)]]
        cues = found.cues | self._local_index.find_split(text, spans)[1]
        return self._read(text, cues, mentions, read, found.facts, (sentences, wanted, spans))

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
        read: list[_Mention],
        facts: set[int] | None,
        scope: tuple[list[int], list[int] | None, list[tuple[int, int]] | None] | None = None,
    ) -> dict[str, list[tuple[str, int]]]:
        """The mentions of `read` (some or all of `mentions`) the text asserts as current, by term
        id. Cues are grouped by clause first, so each mention only looks at the cues of its own
        clause. `facts`: ids of the mentions (ages) that are current whatever their clause says.
        `scope`: the sentence starts, and the sentences read and their spans (None: all); clauses
        are then only marked in those spans, and each span starts one."""
        ctx = self._context
        get = cues.get
        sentences, wanted, spans = scope or (None, None, None)
        if spans is None:
            breaks = [m.end() for m in _PUNCTUATION.finditer(text)]
        else:
            breaks = []
            for begin, end in spans:
                breaks.append(begin)
                breaks += [m.end() for m in _PUNCTUATION.finditer(text, begin, end)]
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
        unmasked = [(name, start) for name, start, end in general_cues if not in_term(start, end)]
        if unmasked:
            if sentences is None:
                sentences = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
            if any(name == "general_intent" for name, _ in unmasked):
                # learning, not reporting: every sentence (every sentence read)
                general = set(range(len(sentences)) if wanted is None else wanted)
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
        for mention in read:
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
