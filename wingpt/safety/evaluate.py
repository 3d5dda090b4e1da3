"""How well the red-flag rules do on realistic messages: `python -m wingpt.safety.evaluate`.

The evaluation set (`wingpt/safety/data/eval/*.yaml`, format in dev.yaml) holds messages that must
raise a flag, grouped by presentation, and messages that must not, grouped by kind. A missed
emergency sends a patient away; a false alarm teaches patients to ignore the notice; so both are
reported, per group and overall, for each split (dev: tuned on; heldout: not) and in total.
Prints a human report, the misses, then one JSON line. Exits 1 when a threshold is not met.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wingpt.chat_template import Message
from wingpt.safety.assess import TriageAssessor, TriageResult
from wingpt.safety.rules import LEVELS, load_rules

EVAL_DIR = Path(__file__).with_name("data") / "eval"
MIN_RECALL = 0.97
MAX_FALSE_ALARM = 0.02
_ASSISTANT = "请问还有其他不舒服吗？"


@dataclass(frozen=True)
class Case:
    """One chat (the patient's turns) and what the rules should do with it."""

    turns: tuple[str, ...]
    split: str
    group: str  # the presentation (positives) or the kind (negatives)
    level: str  # "none" for negatives, else the lowest level that counts as caught

    @property
    def positive(self) -> bool:
        return self.level != "none"

    def messages(self) -> list[Message]:
        messages: list[Message] = []
        for i, text in enumerate(self.turns):
            if i:
                messages.append(Message("assistant", _ASSISTANT))
            messages.append(Message("user", text))
        return messages

    def correct(self, result: TriageResult) -> bool:
        if not self.positive:
            return not result.flagged
        return LEVELS.index(result.level) >= LEVELS.index(self.level)


class EvalSetError(ValueError):
    """A malformed evaluation file, named by file and place."""


def load_cases(directory: Path = EVAL_DIR) -> list[Case]:
    """All cases of every `*.yaml` in `directory`, validated."""
    cases: list[Case] = []
    for path in sorted(directory.glob("*.yaml")):
        cases += _read_file(path)
    if not cases:
        raise EvalSetError(f"{directory}: no evaluation cases found")
    return cases


def _read_file(path: Path) -> list[Case]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("split"), str):
        raise EvalSetError(f"{path}: top level needs 'split', 'positive' and 'negative'")
    cases: list[Case] = []
    for section, key in (("positive", "presentation"), ("negative", "kind")):
        groups = data.get(section)
        if not isinstance(groups, list):
            raise EvalSetError(f"{path}: '{section}' must be a list of groups")
        for i, group in enumerate(groups):
            where = f"{path}: {section}[{i}]"
            if not isinstance(group, dict) or not isinstance(group.get(key), str):
                raise EvalSetError(f"{where}: needs '{key}' and 'cases'")
            level = group.get("level", "emergency") if section == "positive" else "none"
            if section == "positive" and level not in LEVELS[1:]:
                raise EvalSetError(f"{where}: level must be one of {', '.join(LEVELS[1:])}, not {level!r}")
            for j, raw in enumerate(group.get("cases") or []):
                turns = _turns(raw, f"{where}.cases[{j}]")
                cases.append(Case(turns, data["split"], group[key], level))
    return cases


def _turns(raw: Any, where: str) -> tuple[str, ...]:
    turns = [raw] if isinstance(raw, str) else raw
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise EvalSetError(f"{where}: a case is a message or a non-empty list of user turns")
    return tuple(turns)


@dataclass
class Tally:
    """Correct / total for one group, split or overall figure."""

    correct: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.correct += ok
        self.total += 1

    @property
    def rate(self) -> float:
        return self.correct / self.total if self.total else 1.0


@dataclass
class Report:
    """Recall over positives and false-alarm rate over negatives, by split and by group."""

    recall: dict[str, Tally] = field(default_factory=dict)  # split or "all" -> caught / positives
    quiet: dict[str, Tally] = field(default_factory=dict)  # split or "all" -> quiet / negatives
    by_group: dict[tuple[str, bool], Tally] = field(default_factory=dict)  # (group, positive) -> tally
    misses: list[tuple[Case, TriageResult]] = field(default_factory=list)

    def false_alarm_rate(self, split: str = "all") -> float:
        tally = self.quiet.get(split, Tally())
        return 1.0 - tally.rate if tally.total else 0.0

    def summary(self) -> dict[str, Any]:
        def figures(split: str) -> dict[str, Any]:
            r, q = self.recall.get(split, Tally()), self.quiet.get(split, Tally())
            return {
                "positives": r.total,
                "caught": r.correct,
                "recall": round(r.rate, 4),
                "negatives": q.total,
                "false_alarms": q.total - q.correct,
                "false_alarm_rate": round(self.false_alarm_rate(split), 4),
            }

        return {split: figures(split) for split in self.recall.keys() | self.quiet.keys()}


def evaluate(assessor: TriageAssessor, cases: Iterable[Case]) -> Report:
    report = Report()
    for case in cases:
        result = assessor.assess(case.messages())
        ok = case.correct(result)
        book = report.recall if case.positive else report.quiet
        for split in (case.split, "all"):
            book.setdefault(split, Tally()).add(ok)
        report.by_group.setdefault((case.group, case.positive), Tally()).add(ok)
        if not ok:
            report.misses.append((case, result))
    return report


def _print_report(report: Report, show_misses: Sequence[str]) -> None:
    print(f"{'presentation (must fire)':<26} {'caught':>8} {'recall':>7}")
    for (group, positive), t in sorted(report.by_group.items()):
        if positive:
            print(f"{group:<26} {t.correct:>4}/{t.total:<3} {t.rate:>7.1%}")
    print(f"\n{'kind (must not fire)':<26} {'alarms':>8} {'rate':>7}")
    for (group, positive), t in sorted(report.by_group.items()):
        if not positive:
            print(f"{group:<26} {t.total - t.correct:>4}/{t.total:<3} {1 - t.rate:>7.1%}")
    print()
    for split, figures in sorted(report.summary().items()):
        print(
            f"{split:<8} recall {figures['caught']}/{figures['positives']} = {figures['recall']:.1%}   "
            f"false alarms {figures['false_alarms']}/{figures['negatives']} = {figures['false_alarm_rate']:.1%}"
        )
    shown = [(c, r) for c, r in report.misses if c.split in show_misses]
    if shown:
        print(f"\nmisses ({', '.join(show_misses)}):")
    for case, result in shown:
        what = "MISSED" if case.positive else "FALSE ALARM"
        got = f"{result.level} {','.join(result.categories)}".strip()
        print(f"  {what} [{case.split}/{case.group}, want {case.level}, got {got}] {' | '.join(case.turns)}")
        if result.evidence:
            print(f"      evidence: {result.evidence}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", help="rules file (default: the shipped one)")
    parser.add_argument("--cases", type=Path, default=EVAL_DIR, help="folder of evaluation *.yaml files")
    parser.add_argument("--split", help="evaluate only this split (dev while tuning, so heldout stays unseen)")
    parser.add_argument("--min-recall", type=float, default=MIN_RECALL)
    parser.add_argument("--max-false-alarm", type=float, default=MAX_FALSE_ALARM)
    args = parser.parse_args(argv)

    cases = load_cases(args.cases)
    if args.split:
        cases = [c for c in cases if c.split == args.split]
    report = evaluate(TriageAssessor(load_rules(args.rules)), cases)
    _print_report(report, show_misses=sorted({c.split for c in cases}))
    summary = report.summary()
    overall = summary["all"]
    passed = overall["recall"] >= args.min_recall and overall["false_alarm_rate"] <= args.max_false_alarm
    print(f"thresholds: recall >= {args.min_recall:.0%}, false alarms <= {args.max_false_alarm:.0%} -> "
          f"{'PASS' if passed else 'FAIL'}")
    per_presentation = {g: round(t.rate, 4) for (g, pos), t in sorted(report.by_group.items()) if pos}
    print(json.dumps({"eval": "safety", **summary, "recall_by_presentation": per_presentation,
                      "passed": passed}, ensure_ascii=False))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
