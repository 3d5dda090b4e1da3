"""Finding every pattern of the rules in one pass over the text, for the price of a few.

Searching each pattern separately costs each one a full scan of the text (a 2,000-character
message times a hundred patterns), and most patterns start with a group, which Python's `re`
cannot skip ahead for. Instead, the first two characters every match of a pattern can start with
are worked out from the parsed pattern; one character-class search finds the places where any
pattern may start, and a pattern is tried only where its own two-character prefix stands. The
result is exactly what each pattern's own `finditer` finds (leftmost, non-overlapping), which
tests check against the plain search.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from re import _constants as sre  # type: ignore[attr-defined]  # the parser re itself uses
from re import _parser as sre_parse  # type: ignore[attr-defined]

_WIDTH = 2
_MAX_PREFIXES = 4000  # past this, index by the first character only
_NEVER = "(?!)"
_MAX_CACHED = 50_000  # character pairs remembered (a few MB at most)
_Starts = frozenset[tuple[str, bool]]  # (prefix, exact): exact when the item matches exactly that text
_UNKNOWN: _Starts = frozenset({("", False)})
_EMPTY: _Starts = frozenset({("", True)})


class _Unindexable(Exception):
    pass


def prefixes(pattern: str, width: int = _WIDTH) -> frozenset[str] | None:
    """Strings of up to `width` characters that every match of `pattern` starts with one of, or
    None when the start is not bounded (a match may begin with any character)."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error:
        return None
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    try:
        found = {s for s, _ in _sequence(list(parsed), width)}
    except _Unindexable:
        return None
    if len(found) > _MAX_PREFIXES and width > 1:
        return prefixes(pattern, 1)
    if "" in found:
        return None
    return frozenset(p for p in found if len(p) == 1 or p[0] not in found)  # 头 already covers 头痛


def _sequence(items: Sequence[tuple], width: int) -> _Starts:
    current: set[tuple[str, bool]] = {("", True)}
    for op, av in items:
        if all(not exact or len(s) >= width for s, exact in current):
            break
        starts = _item(op, av, width)
        following: set[tuple[str, bool]] = set()
        for s, exact in current:
            if not exact or len(s) >= width:
                following.add((s[:width], False))
                continue
            for t, t_exact in starts:
                joined = s + t
                following.add((joined[:width], t_exact and len(joined) < width) if len(joined) >= width
                              else (joined, t_exact))
        current = following
        if len(current) > _MAX_PREFIXES * 4:
            raise _Unindexable
    return frozenset(current)


def _item(op, av, width: int) -> _Starts:
    if op is sre.LITERAL:
        return frozenset({(chr(av), True)})
    if op is sre.IN:
        chars: set[tuple[str, bool]] = set()
        for kind, value in av:
            if kind is sre.LITERAL:
                chars.add((chr(value), True))
            elif kind is sre.RANGE and value[1] - value[0] < 256:
                chars.update((chr(c), True) for c in range(value[0], value[1] + 1))
            else:  # a negated set, a category (\d) or a wide range: any character
                return _UNKNOWN
        return frozenset(chars)
    if op is sre.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        if add_flags or del_flags:
            raise _Unindexable
        return _sequence(list(sub), width)
    if op is sre.ATOMIC_GROUP:
        return _sequence(list(av), width)
    if op is sre.BRANCH:
        return frozenset().union(*(_sequence(list(branch), width) for branch in av[1]))
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        low, high, sub = av
        if high == 0:
            return _EMPTY
        once = _sequence(list(sub), width)
        starts = set(once) if high == 1 else {(s, False) for s, _ in once}
        if low == 0:
            starts.add(("", True))
        return frozenset(starts)
    if op in (sre.ASSERT, sre.ASSERT_NOT, sre.AT):
        return _EMPTY  # zero width: the text that follows decides the start
    return _UNKNOWN


class PrefixIndex:
    """Many (key, compiled pattern) pairs searched together; `find(text)` gives (key, start, end)
    for every match each pattern's own `finditer` would give, ordered by start."""

    def __init__(self, patterns: Sequence[tuple[Hashable, re.Pattern[str]]]) -> None:
        self._one: dict[str, list[int]] = {}
        self._two: dict[str, list[int]] = {}
        self._patterns = [regex for _, regex in patterns]
        self._match = [regex.match for regex in self._patterns]
        self._keys = [key for key, _ in patterns]
        self._unindexed: list[int] = []
        for i, (_, regex) in enumerate(patterns):
            if regex.pattern == _NEVER:
                continue  # an empty word list: nothing to find
            found = prefixes(regex.pattern)
            if found is None:
                self._unindexed.append(i)
                continue
            for p in found:
                (self._one if len(p) == 1 else self._two).setdefault(p, []).append(i)
        self._trigger = _trigger(self._one, self._two)
        self._by_start: dict[str, tuple[int, ...]] = {}

    @property
    def unindexed(self) -> list[Hashable]:
        """Keys of patterns searched on their own (their start could be any character)."""
        return [self._keys[i] for i in self._unindexed]

    def find(self, text: str) -> list[tuple[Hashable, int, int]]:
        """(key, start, end) for every match of every pattern, ordered by start. One loop, kept
        tight: on a long message it runs for every place a pattern may start."""
        match, keys, cache = self._match, self._keys, self._by_start
        resume = [0] * len(match)  # where each pattern's own search would continue
        found: list[tuple[Hashable, int, int]] = []
        append = found.append
        for m in self._trigger.finditer(text):
            start = m.start()
            group = cache.get(text[start : start + 2])
            if group is None:
                group = self._candidates(text[start : start + 2])
            for i in group:
                if start >= resume[i] and (hit := match[i](text, start)) is not None:
                    resume[i] = end = hit.end()
                    append((keys[i], start, end))
        if self._unindexed:
            found += [(keys[i], *hit.span()) for i in self._unindexed for hit in self._patterns[i].finditer(text)]
            found.sort(key=lambda f: f[1])
        return found

    def _candidates(self, pair: str) -> tuple[int, ...]:
        """Patterns that may start with `pair` (two characters, or one at the end of the text),
        in pattern order; remembered, since patient text repeats its character pairs."""
        group = tuple(sorted(set(self._one.get(pair[0], ())) | set(self._two.get(pair, ()))))
        if len(self._by_start) >= _MAX_CACHED:
            self._by_start.clear()
        self._by_start[pair] = group
        return group


def _trigger(one: dict[str, list[int]], two: dict[str, list[int]]) -> re.Pattern[str]:
    """One search for the places where some pattern may start: a character that starts a
    pattern on its own, or a first character followed by one of the second characters. It
    begins with a character class, so `re` skips ahead through ordinary text, and it consumes
    one character, so a candidate right after another is still found. `find` checks the pair."""
    if not one and not two:
        return re.compile("(?!)")
    firsts = "".join(sorted(one.keys() | {p[0] for p in two}))
    checks = []
    if one:
        checks.append(f"(?<=[{re.escape(''.join(sorted(one)))}])")
    if two:
        checks.append(f"(?=[{re.escape(''.join(sorted({p[1] for p in two})))}])")
    return re.compile(f"[{re.escape(firsts)}](?:{'|'.join(checks)})")


class AnchoredMatch:
    """`pattern.match(text, pos)` that first checks the text at `pos` against the pattern's
    prefixes: most positions asked about (the end of every mention) start no match at all."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._match = pattern.match
        found = prefixes(pattern.pattern) if pattern.pattern != _NEVER else frozenset()
        self._one = None if found is None else {p for p in found if len(p) == 1}
        self._two = None if found is None else {p for p in found if len(p) == 2}

    def __call__(self, text: str, pos: int) -> re.Match[str] | None:
        if self._one is not None and (pos >= len(text) or (
            text[pos] not in self._one and text[pos : pos + 2] not in self._two
        )):
            return None
        return self._match(text, pos)
