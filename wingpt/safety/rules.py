"""The red-flag rules file: loading and validation.

Hospitals edit the rules, not the code, so every mistake must be caught at load and named by
file, category or term, and field: a rules file that silently matched nothing would be worse than
no safety layer at all.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from re import _parser as sre_parse  # type: ignore[attr-defined]  # the parser re itself uses
from typing import Any

import yaml

from wingpt.safety.normalize import to_simplified

DEFAULT_RULES = Path(__file__).with_name("data") / "rules.yaml"
LEVELS = ("none", "urgent", "emergency")  # ordered: a result's level is the highest that fired
# `{gap}` in a term pattern: up to three characters that are neither a negation nor punctuation.
GAP = r"[^不没无未否非,.!?;。、…]{0,3}"
_ID = re.compile(r"[a-z][a-z0-9_]*")
_NEVER = re.compile(r"(?!)")
_CONTEXT_FIELDS = (
    "clause_breaks",
    "negation",
    "negation_fillers",
    "negation_after",
    "not_negation",
    "history",
    "history_after",
    "present",
    "recurrence",
    "general_question",
    "general_intent",
    "report",
    "hypothetical",
    "resolved",
)
# added later: a file without them still loads
_OPTIONAL_CONTEXT = ("general_question", "general_intent", "report", "hypothetical", "resolved")
_TOP_FIELDS = ("version", "continue_generation", "context_turns", "combine_within", "typos", "context", "terms",
               "categories", "lexicon")
_OPTIONAL_TOP = ("typos", "lexicon", "combine_within")
# `{name}` in a pattern: a word list of the lexicon (or {gap}); a regex repeat such as {2,3} is not a name.
_REFERENCE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_CATEGORY_FIELDS = ("id", "name", "level", "when", "notice", "supersedes")
_NUMERIC_ITEMS = {
    "temperature_at_least": (35.0, 43.0),
    "age_days_under": (1, 36500),
    "age_years_under": (1, 100),
    "systolic_at_least": (60, 300),
    "systolic_under": (40, 200),
    "glucose_under": (0.5, 10.0),
    "glucose_at_least": (5.0, 60.0),
}


class RulesError(ValueError):
    """An invalid rules file; the message names the file, the category or term, and the field."""

    def __init__(self, source: Path | str, where: str, field: str, problem: str) -> None:
        self.source, self.where, self.field, self.problem = str(source), where, field, problem
        super().__init__(f"{source}: {where}, field '{field}': {problem}")


@dataclass(frozen=True)
class Term:
    """One piece of vocabulary (chest pain, sweating, infant...); categories combine terms."""

    id: str
    regex: re.Pattern[str] | None  # None when the term is only numeric
    temperature_at_least: float | None = None
    age_days_under: int | None = None
    keep_history: bool = False
    systolic_at_least: float | None = None  # blood pressure, mmHg
    systolic_under: float | None = None
    glucose_under: float | None = None  # blood sugar, mmol/L
    glucose_at_least: float | None = None
    resolves: bool = False  # a mention followed by a resolution (就好了, 缓过来了) is no longer current


@dataclass(frozen=True)
class Category:
    """A red flag: fires when every term of any one `when` alternative is present."""

    id: str
    name: str
    level: str
    when: tuple[tuple[str, ...], ...]
    notice: str
    supersedes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Context:
    """How a mention is read in its clause: negated, past, or current."""

    clause_breaks: re.Pattern[str]
    negation: re.Pattern[str]
    negation_fillers: re.Pattern[str]  # fullmatch: may stand between a negation and its term
    negation_after: re.Pattern[str]
    not_negation: re.Pattern[str]
    history: re.Pattern[str]
    history_after: re.Pattern[str]
    present: re.Pattern[str]
    recurrence: re.Pattern[str]
    general_question: re.Pattern[str]  # a sentence asking about a disease in general, not reporting one
    general_intent: re.Pattern[str]  # anywhere: the writer is learning (想提前了解), not reporting
    # A named person as the subject (我爸, 孩子): the sentence reports, whatever question ends it
    # (我爸喝了农药，能治好吗), unless the sentence is a hypothetical (如果孩子喝了…).
    report: re.Pattern[str] = _NEVER
    hypothetical: re.Pattern[str] = _NEVER
    resolved: re.Pattern[str] = _NEVER  # the episode is over (喝口水就好了): clears `resolves` terms before it


@dataclass(frozen=True)
class Rules:
    """A validated rules file, compiled; immutable, so one object can serve many threads."""

    source: Path
    continue_generation: bool  # hospital config: does the model still answer after a flag?
    context_turns: int
    typos: Mapping[str, str]
    context: Context
    terms: Mapping[str, Term]
    categories: tuple[Category, ...]
    combine_within: int = 0  # characters; 0: a combination's terms may stand anywhere in the message


def load_rules(path: str | Path | None = None) -> Rules:
    """Read and validate a rules file (the shipped default when `path` is None); raises RulesError."""
    source = Path(path) if path is not None else DEFAULT_RULES
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(source, "file", "-", f"cannot be read ({exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise RulesError(
            source, f"line {exc.line}", exc.key, f"duplicate key (first on line {exc.first_line})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        raise RulesError(source, where, "-", f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return _Reader(source).rules(data)


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, first_line: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a duplicated term would silently vanish."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(str(key), line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Reader:
    """Turns the parsed YAML into Rules, failing on the first problem with its location."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.lexicon: dict[str, str] = {}  # name -> (?:word|word...), filled before any pattern is read

    def fail(self, where: str, field: str, problem: str) -> RulesError:
        return RulesError(self.source, where, field, problem)

    def rules(self, data: Any) -> Rules:
        where = "top level"
        required = tuple(f for f in _TOP_FIELDS if f not in _OPTIONAL_TOP)
        data = self.mapping(data, where, "-", required=required, allowed=_TOP_FIELDS)
        if type(data["version"]) is not int or data["version"] != 1:
            raise self.fail(where, "version", f"unsupported version {data['version']!r}; expected 1")
        if not isinstance(data["continue_generation"], bool):
            raise self.fail(where, "continue_generation", "must be true or false")
        turns = data["context_turns"]
        if not isinstance(turns, int) or isinstance(turns, bool) or not 0 <= turns <= 10:
            raise self.fail(where, "context_turns", f"must be a whole number from 0 to 10, not {turns!r}")
        within = data.get("combine_within", 0)
        if not isinstance(within, int) or isinstance(within, bool) or not 0 <= within <= 10000:
            raise self.fail(where, "combine_within", f"must be a whole number from 0 to 10000, not {within!r}")
        self.lexicon = self.lexicons(data.get("lexicon") or {})
        terms = self.terms(data["terms"])
        categories = self.categories(data["categories"], terms)
        return Rules(
            source=self.source,
            continue_generation=data["continue_generation"],
            context_turns=turns,
            typos=self.typos(data.get("typos") or {}),
            context=self.context(data["context"]),
            terms=terms,
            categories=categories,
            combine_within=within,
        )

    # --- building blocks -------------------------------------------------------------------------
    def mapping(
        self, value: Any, where: str, field: str, required: tuple[str, ...], allowed: tuple[str, ...]
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, field, f"must be a mapping, not {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail(where, str(key), f"unknown field; expected one of {', '.join(allowed)}")
        for key in required:
            if key not in value or value[key] is None:
                raise self.fail(where, key, "missing")
        return value

    def string(self, value: Any, where: str, field: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, field, f"must be a non-empty string, not {value!r}")
        return value.strip()

    def pattern(self, value: Any, where: str, field: str) -> str:
        """A pattern normalised like patient text (so 頭痛 in the file still matches), its `{gap}`
        and `{lexicon}` references expanded, compiled to check it."""
        text = to_simplified(self.string(value, where, field))
        pattern = _REFERENCE.sub(lambda m: self.reference(m.group(1), where, field), text)
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise self.fail(where, field, f"bad regex {value!r}: {exc}") from None
        if compiled.search("") is not None:
            raise self.fail(where, field, f"pattern {value!r} matches empty text, so it would match every message")
        if sre_parse.parse(pattern).getwidth()[0] == 0:
            raise self.fail(where, field, f"pattern {value!r} can match empty text (look-arounds only)")
        return pattern

    def reference(self, name: str, where: str, field: str) -> str:
        if name == "gap":
            return GAP
        if name not in self.lexicon:
            close = difflib.get_close_matches(name, [*self.lexicon, "gap"], n=1)
            hint = f"; did you mean '{{{close[0]}}}'?" if close else "; define it under 'lexicon'"
            raise self.fail(where, field, f"unknown word list '{{{name}}}'{hint}")
        return self.lexicon[name]

    def patterns(self, value: Any, where: str, field: str) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(where, field, f"must be a list, not {type(value).__name__}")
        return [self.pattern(item, where, f"{field}[{i}]") for i, item in enumerate(value)]

    # --- sections --------------------------------------------------------------------------------
    def lexicons(self, value: Any) -> dict[str, str]:
        """Named word lists (lay synonyms of a body part, a severity...) that patterns use as {name}."""
        if not isinstance(value, dict):
            raise self.fail("lexicon", "-", "must be a mapping of name -> list of words")
        lists: dict[str, str] = {}
        for name, words in value.items():
            where = f"lexicon '{name}'"
            self.id(name, where, "name")
            if name == "gap":
                raise self.fail(where, "name", "'gap' is built in")
            patterns = self.patterns(words, where, "words")  # may use {gap} and earlier lists
            if not patterns:
                raise self.fail(where, "words", "must be a non-empty list")
            lists[name] = "(?:" + "|".join(sorted(patterns, key=len, reverse=True)) + ")"
            self.lexicon[name] = lists[name]
        return lists

    def typos(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail("typos", "-", "must be a mapping of wrong -> right")
        return {
            to_simplified(self.string(k, "typos", str(k))).lower(): to_simplified(
                self.string(v, "typos", str(k))
            ).lower()
            for k, v in value.items()
        }

    def context(self, value: Any) -> Context:
        where = "context"
        required = tuple(f for f in _CONTEXT_FIELDS if f not in _OPTIONAL_CONTEXT)
        value = self.mapping(value, where, "-", required=required, allowed=_CONTEXT_FIELDS)
        compiled = {name: alternation(self.patterns(value.get(name) or [], where, name)) for name in _CONTEXT_FIELDS}
        # Fillers are matched as a whole run between a negation and its term (没有|明显的|胸痛).
        compiled["negation_fillers"] = re.compile(f"(?:{compiled['negation_fillers'].pattern})*")
        return Context(**compiled)

    def terms(self, value: Any) -> dict[str, Term]:
        if not isinstance(value, dict) or not value:
            raise self.fail("top level", "terms", "must be a non-empty mapping of term id -> patterns")
        return {self.id(key, f"term {key!r}", "id"): self.term(key, spec) for key, spec in value.items()}

    def term(self, term_id: str, spec: Any) -> Term:
        where = f"term '{term_id}'"
        keep_history = resolves = False
        if isinstance(spec, dict):
            allowed = ("patterns", "keep_history", "resolves")
            spec = self.mapping(spec, where, "-", required=("patterns",), allowed=allowed)
            keep_history = spec.get("keep_history", False)
            resolves = spec.get("resolves", False)
            for name, flag in (("keep_history", keep_history), ("resolves", resolves)):
                if not isinstance(flag, bool):
                    raise self.fail(where, name, "must be true or false")
            spec = spec["patterns"]
        if not isinstance(spec, list) or not spec:
            raise self.fail(where, "patterns", "must be a non-empty list of patterns")
        patterns: list[str] = []
        numbers: dict[str, float] = {}
        for i, item in enumerate(spec):
            if isinstance(item, dict):
                numbers.update(self.numeric_item(item, where, f"patterns[{i}]", numbers))
            else:
                patterns.append(self.pattern(item, where, f"patterns[{i}]"))
        regex = alternation(patterns) if patterns else None
        age_days = numbers.get("age_days_under")
        if "age_years_under" in numbers:
            age_days = numbers["age_years_under"] * 365
        return Term(
            id=term_id,
            regex=regex,
            temperature_at_least=numbers.get("temperature_at_least"),
            age_days_under=int(age_days) if age_days is not None else None,
            keep_history=keep_history,
            systolic_at_least=numbers.get("systolic_at_least"),
            systolic_under=numbers.get("systolic_under"),
            glucose_under=numbers.get("glucose_under"),
            glucose_at_least=numbers.get("glucose_at_least"),
            resolves=resolves,
        )

    def numeric_item(self, item: dict[str, Any], where: str, field: str, seen: dict[str, float]) -> dict[str, float]:
        if len(item) != 1:
            raise self.fail(where, field, f"a number item has exactly one of {', '.join(_NUMERIC_ITEMS)}")
        [(key, value)] = item.items()
        if key not in _NUMERIC_ITEMS:
            raise self.fail(where, field, f"unknown number item '{key}'; expected one of {', '.join(_NUMERIC_ITEMS)}")
        age_keys = {"age_days_under", "age_years_under"}
        if key in seen or (key in age_keys and age_keys & seen.keys()):
            raise self.fail(where, field, f"a term takes one '{key}' item")
        low, high = _NUMERIC_ITEMS[key]
        if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(where, f"{field}.{key}", f"must be a number from {low} to {high}, not {value!r}")
        return {key: float(value)}

    def categories(self, value: Any, terms: Mapping[str, Term]) -> tuple[Category, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail("top level", "categories", "must be a non-empty list")
        first_seen: dict[str, int] = {}
        categories = []
        for i, spec in enumerate(value):
            category = self.category(spec, f"categories[{i}]", terms)
            if category.id in first_seen:
                first = first_seen[category.id]
                raise self.fail(
                    f"category '{category.id}'", "id", f"duplicate id: categories[{first}] and categories[{i}]"
                )
            first_seen[category.id] = i
            categories.append(category)
        for category in categories:
            for i, other in enumerate(category.supersedes):
                if other not in first_seen or other == category.id:
                    raise self.fail(f"category '{category.id}'", f"supersedes[{i}]", f"unknown category '{other}'")
        return tuple(categories)

    def category(self, spec: Any, where: str, terms: Mapping[str, Term]) -> Category:
        if isinstance(spec, dict) and isinstance(spec.get("id"), str):
            where = f"category '{spec['id']}'"  # name it by id as soon as it has one
        spec = self.mapping(spec, where, "-", required=_CATEGORY_FIELDS[:5], allowed=_CATEGORY_FIELDS)
        category_id = self.id(spec["id"], where, "id")
        level = spec["level"]
        if level not in LEVELS[1:]:
            raise self.fail(where, "level", f"unknown level {level!r}; expected one of {', '.join(LEVELS[1:])}")
        return Category(
            id=category_id,
            name=self.string(spec["name"], where, "name"),
            level=level,
            when=self.when(spec["when"], where, terms),
            notice=self.string(spec["notice"], where, "notice"),
            supersedes=self.supersedes(spec.get("supersedes") or [], where),
        )

    def when(self, value: Any, where: str, terms: Mapping[str, Term]) -> tuple[tuple[str, ...], ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "when", "must be a non-empty list of terms or lists of terms")
        alternatives = []
        for i, alt in enumerate(value):
            names = [alt] if isinstance(alt, str) else alt
            if not isinstance(names, list) or not names:
                raise self.fail(where, f"when[{i}]", "must be a term id or a non-empty list of term ids")
            for name in names:
                if not isinstance(name, str) or name not in terms:
                    close = difflib.get_close_matches(str(name), terms, n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else "; define it under 'terms'"
                    raise self.fail(where, f"when[{i}]", f"unknown term {name!r}{hint}")
            alternatives.append(tuple(names))
        return tuple(alternatives)

    def supersedes(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(where, "supersedes", "must be a list of category ids")
        return tuple(self.id(other, where, f"supersedes[{i}]") for i, other in enumerate(value))

    def id(self, value: Any, where: str, field: str) -> str:
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise self.fail(where, field, f"id {value!r} must be lower-case ASCII letters, digits and _")
        return value


def alternation(patterns: list[str]) -> re.Pattern[str]:
    """One regex for a list of words, longest first so 没有 wins over 没; never matches when empty."""
    if not patterns:
        return _NEVER
    return re.compile("|".join(f"(?:{p})" for p in sorted(patterns, key=len, reverse=True)))
