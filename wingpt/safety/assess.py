"""Triage assessment of a chat: which red flags the patient's latest message raises.

This runs in the orchestrator (the public model `ensemble`) before the engine is called, so it must
be cheap (well under a millisecond) and must not depend on the model: it is plain rules over text.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter

from wingpt.chat_template import Message
from wingpt.safety.rules import LEVELS, Category, Rules
from wingpt.safety.scan import Scanner

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
        # Each `when` alternative with its terms as a set: one C-level subset test per alternative.
        self._alternatives = [(c, [(terms, frozenset(terms)) for terms in c.when]) for c in rules.categories]

    def assess(self, messages: Sequence[Message]) -> TriageResult:
        """Flags raised by the latest user message, with up to `context_turns` earlier user turns
        completing combinations (chest pain in one turn, sweating in the next). A flag needs at least
        one of its terms in the latest message: the notice answers what the patient just said. Within
        the latest message, the terms of a combination must stand within `combine_within` characters
        of each other, so a long message does not combine a symptom from one paragraph with a
        history from another."""
        user_turns = [m.content for m in messages if m.role == "user"]
        if not user_turns:
            return TriageResult()
        latest = self._scanner.scan(user_turns[-1])
        if not latest:
            return TriageResult()
        earlier: dict[str, list[tuple[str, int]]] = {}
        for text in user_turns[-1 - self.rules.context_turns : -1]:
            for term, found in self._scanner.scan(text).items():
                earlier.setdefault(term, []).extend(found)
        fired: list[Category] = []
        evidence: dict[str, list[str]] = {}
        found = latest.keys() | earlier.keys()
        positions: dict[str, list[int]] = {}
        for category, alternatives in self._alternatives:
            for terms, needed in alternatives:
                if needed <= found and not needed.isdisjoint(latest) and self._close(terms, latest, positions):
                    fired.append(category)
                    evidence[category.id] = list(
                        dict.fromkeys(map(_SNIPPET, chain.from_iterable(latest.get(t) or earlier[t] for t in terms)))
                    )
                    break
        return _result(fired, evidence)

    def _close(
        self, terms: tuple[str, ...], latest: dict[str, list[tuple[str, int]]], positions: dict[str, list[int]]
    ) -> bool:
        """Whether the combination's terms found in the latest message stand near each other."""
        window = self.rules.combine_within
        named = [t for t in terms if t in latest]
        if not window or len(named) < 2:
            return True
        here = []
        for term in named:  # the positions of a term, worked out once per request
            if (starts := positions.get(term)) is None:
                starts = positions[term] = list(map(_POSITION, latest[term]))
            here.append(starts)
        first, *others = here  # each in increasing order: the scanner reports mentions by start
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
