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
from collections.abc import Container, Hashable, Sequence
from itertools import accumulate, compress, count
from operator import add, itemgetter
from re import _constants as sre  # type: ignore[attr-defined]  # the parser re itself uses
from re import _parser as sre_parse  # type: ignore[attr-defined]

_WIDTH = 2
_INDEX_WIDTH = 3  # the index looks up the first three characters where a match may start
_MAX_PREFIXES = 4000  # past this, a shorter width
_NEVER = "(?!)"
_MAX_CACHED = 50_000  # lookups remembered (a few MB at most)
_Starts = frozenset[tuple[str, bool]]  # (prefix, exact): exact when the item matches exactly that text
_START = itemgetter(1)
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
        return prefixes(pattern, width - 1)
    if "" in found:
        return None
    # 头 already covers 头痛 and 头痛得
    return frozenset(p for p in found if not any(p[:k] in found for k in range(1, len(p))))


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


def may_consume(pattern: str, chars: str) -> bool:
    """Whether some match of `pattern` may take one of `chars` into its text (look-arounds take
    none). True when unsure: callers rely on a False to search only part of a text."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error:
        return True
    return parsed.state.flags & (re.IGNORECASE | re.VERBOSE) != 0 or _consumes(list(parsed), frozenset(map(ord, chars)))


def _consumes(items: Sequence[tuple], chars: frozenset[int]) -> bool:
    for op, av in items:
        if op is sre.LITERAL:
            found = av in chars
        elif op is sre.NOT_LITERAL:
            found = bool(chars - {av})
        elif op is sre.IN:
            found = _in_set(av, chars)
        elif op is sre.SUBPATTERN:
            found = _consumes(list(av[3]), chars)
        elif op is sre.ATOMIC_GROUP:
            found = _consumes(list(av), chars)
        elif op is sre.BRANCH:
            found = any(_consumes(list(branch), chars) for branch in av[1])
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            found = av[1] > 0 and _consumes(list(av[2]), chars)
        elif op in (sre.ASSERT, sre.ASSERT_NOT, sre.AT):
            found = False
        else:  # any character, a back-reference, a conditional: may be anything
            found = True
        if found:
            return True
    return False


def _in_set(items: Sequence[tuple], chars: frozenset[int]) -> bool:
    """Whether a character class may match one of `chars`."""
    negated = bool(items) and items[0][0] is sre.NEGATE
    matched = set()
    for kind, value in items[1:] if negated else items:
        if kind is sre.LITERAL:
            matched |= chars & {value}
        elif kind is sre.RANGE:
            matched |= {c for c in chars if value[0] <= c <= value[1]}
        else:  # a category (\d, \w) or something rarer: unsure
            return True
    return bool(chars - matched) if negated else bool(matched)


class PrefixIndex:
    """Many (key, compiled pattern) pairs searched together; `find(text)` gives (key, start, end)
    for every match each pattern's own `finditer` would give, ordered by start.

    Where the trigger finds a place some pattern may start, the patterns to try there are looked
    up by the next three characters (then two, then one): three characters rule out most patterns
    that two would leave to try, and each try is a regex call. The lookup tables are built from
    the rules alone, once; the groups looked up are also kept by their three characters, which
    are a function of the rules and those characters only (never of a message's result)."""

    def __init__(self, patterns: Sequence[tuple[Hashable, re.Pattern[str]]], apart: type | None = None) -> None:
        self._patterns = [regex for _, regex in patterns]
        self._match = [regex.match for regex in self._patterns]
        self._keys = [key for key, _ in patterns]
        self._unindexed: list[int] = []
        by_prefix: list[dict[str, set[int]]] = [{}, {}, {}]  # prefixes of 1, 2 and 3 characters
        for i, (_, regex) in enumerate(patterns):
            if regex.pattern == _NEVER:
                continue  # an empty word list: nothing to find
            found = prefixes(regex.pattern, _INDEX_WIDTH)
            if found is None:
                self._unindexed.append(i)
                continue
            for p in found:
                by_prefix[len(p) - 1].setdefault(p, set()).add(i)
        one, two, three = by_prefix
        # The full group for each key: every pattern whose prefix is the key or a prefix of it, in
        # pattern order. Two characters with no group of their own fall back to the first one's.
        for pair in {p[:2] for p in three}:
            two.setdefault(pair, set())
        self._one = {p: tuple(sorted(g)) for p, g in one.items()}
        self._two = {p: tuple(sorted(g | one.get(p[0], set()))) for p, g in two.items()}
        self._three = {p: tuple(sorted(g | two[p[:2]] | one.get(p[0], set()))) for p, g in three.items()}
        self._trigger = _trigger(one, two)
        self._by_start: dict[str, tuple[int, ...]] = {}  # the groups looked up lately, by their key
        # find_split: the keys set apart, and for each pattern -1 or the place of its key among them
        self._cue_keys = list(dict.fromkeys(k for k in self._keys if apart is not None and isinstance(k, apart)))
        place = {k: i for i, k in enumerate(self._cue_keys)}
        self._slot_of = [place.get(k, -1) if apart is not None and isinstance(k, apart) else -1 for k in self._keys]

    @property
    def unindexed(self) -> list[Hashable]:
        """Keys of patterns searched on their own (their start could be any character)."""
        return [self._keys[i] for i in self._unindexed]

    def find(self, text: str) -> list[tuple[Hashable, int, int]]:
        """(key, start, end) for every match of every pattern, ordered by start."""
        found, apart = self.find_split(text)
        if apart:
            for hits in apart.values():
                found += hits
            found.sort(key=_START)
        return found

    def find_split(
        self, text: str, spans: Sequence[tuple[int, int]] | None = None
    ) -> tuple[list[tuple[Hashable, int, int]], dict[Hashable, list[tuple[Hashable, int, int]]]]:
        """`find`, with the matches of the patterns whose key is of the type `apart` (context cues
        beside the terms) set apart: (the other matches, ordered by start; {key: its matches, by start}).
        On a long message the trigger finds hundreds of places where a pattern may start and the
        three characters there rule out half of them; those are dropped in C (split, running
        lengths, a dict lookup per place, compress), so Python steps only where a pattern is tried.

        `spans`: (start, end) parts of the text, in order and apart, where matches may start (None:
        all of it). The matches are those of the whole text that start there, provided no match
        runs into a part from before it or out of it (the caller's to ensure, see `may_consume`):
        a message's few sentences that matter then cost only their own length."""
        match, keys, slot_of, cache, split = self._match, self._keys, self._slot_of, self._by_start, self._trigger.split
        # split drops each one-character trigger match: the k-th starts at len(pieces before) + k.
        if spans is None:
            starts = list(map(add, accumulate(map(len, split(text)[:-1])), count()))
        else:  # no match runs out of a part, so a place the split of a part misses starts none
            starts = []
            for begin, end in spans:
                starts += map(add, accumulate(map(len, split(text[begin:end])[:-1])), count(begin))
        heads = [text[start : start + 3] for start in starts]
        groups = list(map(cache.get, heads))
        if None in groups:
            groups = [
                self._candidates(head) if group is None else group for group, head in zip(groups, heads, strict=True)
            ]
        resume = [0] * len(match)  # where each pattern's own search would continue
        found: list[tuple[Hashable, int, int]] = []
        append = found.append
        slots: list[list[tuple[Hashable, int, int]]] = [[] for _ in self._cue_keys]
        for start, group in compress(zip(starts, groups, strict=True), groups):
            for i in group:
                if start >= resume[i] and (hit := match[i](text, start)) is not None:
                    resume[i] = end = hit.end()
                    if (slot := slot_of[i]) < 0:
                        append((keys[i], start, end))
                    else:
                        slots[slot].append((keys[i], start, end))
        for i in self._unindexed:
            hits = [(keys[i], *hit.span()) for hit in self._patterns[i].finditer(text)]
            if spans is not None:
                hits = [hit for hit in hits if any(begin <= hit[1] < end for begin, end in spans)]
            if (slot := slot_of[i]) < 0:
                found += hits
                found.sort(key=_START)
            else:
                slots[slot] += hits
                slots[slot].sort(key=_START)
        return found, {self._cue_keys[k]: hits for k, hits in enumerate(slots) if hits}

    def _candidates(self, key: str) -> tuple[int, ...]:
        """The patterns that may start with `key` (three characters, fewer at the end of the text);
        kept for the next time, since patient text repeats its characters (a dict lookup is
        cheaper than the three of the tables)."""
        group = self._three.get(key) or self._two.get(key[:2]) or self._one.get(key[0], ())
        if len(self._by_start) >= _MAX_CACHED:
            self._by_start.clear()
        self._by_start[key] = group
        return group


def _trigger(one: dict[str, set[int]], two: dict[str, set[int]]) -> re.Pattern[str]:
    """One search for the places where some pattern may start: a character that starts a
    pattern on its own, or a first character followed by one of the second characters. It
    begins with a character class, so `re` skips ahead through ordinary text, and it consumes
    one character, so a candidate right after another is still found. `find` looks up the rest."""
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
    prefixes: most positions asked about (the end of every mention) start no match at all.
    A loop that asks at many positions can test `first`, `one` and `two` (the first characters,
    the one- and two-character prefixes; everything when any position may start a match)
    itself and call `match` only then."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.match = pattern.match
        found = prefixes(pattern.pattern, 2) if pattern.pattern != _NEVER else frozenset()
        self.first: Container[str] = _ANY if found is None else frozenset(p[0] for p in found)
        self.one: Container[str] = _ANY if found is None else frozenset(p for p in found if len(p) == 1)
        self.two: Container[str] = _ANY if found is None else frozenset(p for p in found if len(p) == 2)

    def __call__(self, text: str, pos: int) -> re.Match[str] | None:
        if text[pos : pos + 1] not in self.one and text[pos : pos + 2] not in self.two:
            return None
        return self.match(text, pos)


class _Anything:
    """The prefixes of a pattern whose start is not bounded: every string is one."""

    def __contains__(self, item: object) -> bool:
        return True


_ANY = _Anything()
