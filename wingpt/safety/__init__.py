"""Clinical safety layer: emergency red flags in the patient's messages, and the disclaimer.

Runs server-side before generation so every client gets the same flags. It is keyword and rule
based, not a diagnosis: see docs/safety.md for what it does and does not catch.

    rules = load_rules()                 # or load_rules(path) for a hospital's own file
    result = TriageAssessor(rules).assess(messages)
    result.level, result.categories, result.notice, result.to_json()
"""

from wingpt.safety.assess import TriageAssessor, TriageResult
from wingpt.safety.disclaimer import DISCLAIMER
from wingpt.safety.rules import LEVELS, Rules, RulesError, load_rules
from wingpt.safety.watch import RulesWatcher

__all__ = [
    "DISCLAIMER",
    "LEVELS",
    "Rules",
    "RulesError",
    "RulesWatcher",
    "TriageAssessor",
    "TriageResult",
    "load_rules",
]
