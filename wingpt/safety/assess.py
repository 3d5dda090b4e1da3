"""Triage assessment of a chat: which red flags the patient's latest message raises.

This runs in the orchestrator (the public model `ensemble`) before the engine is called, so it must
be cheap (well under a millisecond) and must not depend on the model: it is plain rules over text.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter

from wingpt.chat_template import Message
from wingpt.safety.rules import LEVELS, Category, Rules
from wingpt.safety.scan import Found, Scanner

_SNIPPET, _POSITION = itemgetter(0), itemgetter(1)


@dataclass(frozen=True)
class TriageResult:
    """Flags for one request. `evidence` (category -> matched text) is for review and tests; it is
    left out of `to_json` so the patient's words do not travel into logs beside the flags."""

    level: str = "none"  # "none" < "urgent" < "emergency"
    categories: list[str] = field(default_factory=list)
    notice: str = ""
    evidence: dict[str, list[str]] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return self.level != "none"

    def to_json(self) -> str:
        """Compact JSON for the `triage` output tensor."""
        body = {"level": self.level, "categories": self.categories, "notice": self.notice}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


class TriageAssessor:
    """Rules compiled once; `assess` is then safe to call from many threads (no shared state)."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._scanner = Scanner(rules)
        # Each `when` alternative with its terms as a set: one C-level subset test per alternative;
        # and by term, the (category, alternative) places of the alternatives that use it, since
        # an alternative can only fire with one of its terms hit in the latest message (file order).
        self._alternatives = [(c, terms, frozenset(terms)) for c in rules.categories for terms in c.when]
        self._using: dict[str, set[int]] = {}
        for i, (_, terms, _) in enumerate(self._alternatives):
            for term in terms:
                self._using.setdefault(term, set()).add(i)

    def assess(self, messages: Sequence[Message]) -> TriageResult:
        """Flags raised by the latest user message, with up to `context_turns` earlier user turns
        completing combinations (chest pain in one turn, sweating in the next). A flag needs at least
        one of its terms in the latest message: the notice answers what the patient just said. Within
        the latest message, the terms of a combination must stand within `combine_within` characters
        of each other, so a long message does not combine a symptom from one paragraph with a
        history from another.

        The hits are found before they are read in context, and only the combinations their hits
        could still complete are read: reading only takes mentions away, so a combination that
        the hits cannot complete cannot fire. Most long messages then need few sentences read."""
        user_turns = [m.content for m in messages if m.role == "user"]
        if not user_turns:
            return TriageResult()
        scanner = self._scanner
        hits = scanner.find(user_turns[-1])
        if hits is None:
            return TriageResult()
        earlier_turns = user_turns[-1 - self.rules.context_turns : -1]
        earlier_hits = [found for text in earlier_turns if (found := scanner.find(text)) is not None]
        candidates = self._candidates(hits, frozenset().union(*(f.terms for f in earlier_hits)))
        if not candidates:
            return TriageResult()
        needed = {term for _, alternatives in candidates for terms, _ in alternatives for term in terms}
        latest = scanner.read(hits, needed)
        if not latest:
            return TriageResult()
        earlier: dict[str, list[tuple[str, int]]] = {}
        for found in earlier_hits:
            for term, mentions in scanner.read(found, needed).items():
                earlier.setdefault(term, []).extend(mentions)
        fired: list[Category] = []
        evidence: dict[str, list[str]] = {}
        present = latest.keys() | earlier.keys()
        positions: dict[str, list[int]] = {}

        def starts(term: str) -> list[int]:  # the positions of a term, worked out once per request
            if (found := positions.get(term)) is None:
                found = positions[term] = list(map(_POSITION, latest[term]))
            return found

        for category, alternatives in candidates:
            for terms, wanted in alternatives:
                if wanted <= present and not wanted.isdisjoint(latest) and self._close(terms, latest, starts):
                    fired.append(category)
                    evidence[category.id] = list(
                        dict.fromkeys(map(_SNIPPET, chain.from_iterable(latest.get(t) or earlier[t] for t in terms)))
                    )
                    break
        return _result(fired, evidence)

    def _candidates(
        self, hits: Found, earlier: frozenset[str]
    ) -> list[tuple[Category, list[tuple[tuple[str, ...], frozenset[str]]]]]:
        """The categories, each with the alternatives its hits could complete, in file order: every
        term hit somewhere, one in the latest message, and (when all stand in the latest message, so
        none can come from an earlier turn) near each other as hit. Reading takes hits away and
        never adds one, so no other alternative can fire. Nearness is only worked out for a long
        text with few hits, where it spares reading sentences; the others are read whole anyway."""
        hit = hits.terms | earlier
        using = self._using
        places = set().union(*(using[term] for term in hits.terms if term in using))
        starts: dict[str, list[int]] | None = None
        candidates: list[tuple[Category, list[tuple[tuple[str, ...], frozenset[str]]]]] = []
        for i in sorted(places):
            category, terms, needed = self._alternatives[i]
            if not needed <= hit:
                continue
            if len(needed) > 1 and hits.sparse and self.rules.combine_within and needed.isdisjoint(earlier):
                if starts is None:  # by term, once per request, only when a combination needs it
                    starts = {}
                    for term, (_, start, _) in zip(hits.ids, hits.mentions, strict=True):
                        starts.setdefault(term, []).append(start)
                if not self._close(terms, hits.terms, starts.__getitem__):
                    continue
            if candidates and candidates[-1][0] is category:
                candidates[-1][1].append((terms, needed))
            else:
                candidates.append((category, [(terms, needed)]))
        return candidates

    def _close(self, terms: tuple[str, ...], here: Container[str], starts: Callable[[str], list[int]]) -> bool:
        """Whether the combination's terms found in the latest message (`here`; `starts`: a term's
        positions there, in increasing order) stand near each other."""
        window = self.rules.combine_within
        named = [t for t in terms if t in here]
        if not window or len(named) < 2:
            return True
        first, *others = map(starts, named)
        for anchor in first:
            for positions in others:  # is one of them within the window of the anchor?
                i = bisect_left(positions, anchor - window)
                if i == len(positions) or positions[i] > anchor + window:
                    break
            else:
                return True
        return False


def _result(fired: list[Category], evidence: dict[str, list[str]]) -> TriageResult:
    hidden = {other for category in fired for other in category.supersedes}
    fired = [c for c in fired if c.id not in hidden]
    if not fired:
        return TriageResult()
    fired.sort(key=lambda c: -LEVELS.index(c.level))  # stable: file order within a level
    return TriageResult(
        level=fired[0].level,
        categories=[c.id for c in fired],
        notice="\n".join(dict.fromkeys(c.notice for c in fired)),
        evidence={c.id: evidence[c.id] for c in fired},
    )
