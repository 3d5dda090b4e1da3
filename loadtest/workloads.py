"""What the load is made of: chat prompts built as messages (the server applies the WiNGPT2 template).

- `seed5`: the seed's five WiNGPT2-vs-Kimi comparison questions (data/seed_comparison.json).
- `qizhen`: QiZhen's evaluation questions: drug indications and disease drugs/tests/presentation
  (the templates of shared/seeds/002, over a fixed list of drugs and diseases).
- `triage`: multi-turn triage dialogues ending in the patient's latest question.
- `mixed`: all of the above, interleaved.

`--prompt-tokens N` pads each prompt to about N templated prompt tokens (measured with the Qwen
tokenizer and the WiNGPT2 template, exactly what the engine receives) by putting earlier turns of
realistic Chinese medical dialogue (the seed's recorded questions and answers) before it.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from wingpt.chat_template import build_prompt_ids, parse_messages
from wingpt.tokenizer import load_tokenizer

DATA = Path(__file__).resolve().parent / "data"
WORKLOADS = ("seed5", "qizhen", "triage", "mixed")
_UNLIMITED = 1 << 30


@dataclass(frozen=True)
class Prompt:
    """One chat to send: a name for reports, the messages, and its templated length in tokens."""

    name: str
    messages: tuple[dict[str, str], ...]
    prompt_tokens: int

    def as_messages(self) -> list[dict[str, str]]:
        return [dict(m) for m in self.messages]


def prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Tokens of the templated prompt the engine receives (no system preamble configured)."""
    ids, _ = build_prompt_ids(load_tokenizer(None), parse_messages(messages), _UNLIMITED)
    return len(ids)


@functools.lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads((DATA / "workloads.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def seed_comparison() -> dict:
    """The seed's five questions with the answers it recorded by hand (WiNGPT2 demo and Kimi, 2024)."""
    return json.loads((DATA / "seed_comparison.json").read_text(encoding="utf-8"))


def _seed5() -> list[tuple[str, list[dict[str, str]]]]:
    return [(f"seed5-{i + 1}", [{"role": "user", "content": q["question"]}])
            for i, q in enumerate(seed_comparison()["questions"])]


def _qizhen() -> list[tuple[str, list[dict[str, str]]]]:
    data = _data()["qizhen"]
    drugs = [(f"qizhen-drug-{i + 1}", t.format(drug=d))
             for i, (d, t) in enumerate(zip(data["drugs"], itertools.cycle(data["drug_templates"]), strict=False))]
    diseases = [(f"qizhen-disease-{i + 1}", t.format(disease=d))
                for i, (d, t) in enumerate(zip(data["diseases"], itertools.cycle(data["disease_templates"]),
                                               strict=False))]
    questions = [q for pair in itertools.zip_longest(drugs, diseases) for q in pair if q]
    return [(name, [{"role": "user", "content": text}]) for name, text in questions]


def _triage() -> list[tuple[str, list[dict[str, str]]]]:
    return [(f"triage-{d['name']}", [dict(m) for m in d["messages"]]) for d in _data()["triage"]]


def _history_turns() -> list[dict[str, str]]:
    """Earlier (user, assistant) turns for padding: the seed's questions with both recorded answers."""
    turns = []
    for q in seed_comparison()["questions"]:
        for answer in q["answers"].values():
            turns += [{"role": "user", "content": q["question"]}, {"role": "assistant", "content": answer}]
    return turns


def pad_to_tokens(messages: list[dict[str, str]], target: int) -> list[dict[str, str]]:
    """`messages` with earlier dialogue turns put before it so the templated prompt is about `target` tokens
    (within a token or two; never shorter than `messages` alone).

    Whole (question, answer) pairs are added until the target is reached; the oldest is then replaced by
    one patient turn quoting it, cut to fit (a patient pasting an earlier consultation)."""
    if prompt_tokens(messages) >= target:
        return messages
    history = _history_turns()
    chosen: list[dict[str, str]] = []
    for pair in itertools.cycle(range(0, len(history), 2)):
        chosen = history[pair:pair + 2] + chosen
        if prompt_tokens(chosen + messages) >= target:
            break
    quoted, rest = chosen[0]["content"] + "\n" + chosen[1]["content"], chosen[2:]
    low, high = 0, len(quoted)  # the longest cut of the quoted turn that stays within target
    while low < high:
        mid = (low + high + 1) // 2
        if prompt_tokens([{"role": "user", "content": quoted[:mid]}, *rest, *messages]) <= target:
            low = mid
        else:
            high = mid - 1
    if low == 0:
        return rest + messages
    return [{"role": "user", "content": quoted[:low]}, *rest, *messages]


def build_workload(name: str, prompt_tokens_target: int = 0) -> list[Prompt]:
    """The prompts of a workload, in the order they are sent (round-robin); padded when a target is given."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
    if prompt_tokens_target < 0:
        raise ValueError(f"prompt tokens must be >= 0, got {prompt_tokens_target}")
    sources = {"seed5": _seed5, "qizhen": _qizhen, "triage": _triage}
    if name == "mixed":
        lists = [sources[k]() for k in ("seed5", "qizhen", "triage")]
        items = [p for group in itertools.zip_longest(*lists) for p in group if p]
    else:
        items = sources[name]()
    prompts = []
    for prompt_name, messages in items:
        if prompt_tokens_target:
            messages = pad_to_tokens(messages, prompt_tokens_target)
        prompts.append(Prompt(prompt_name, tuple(messages), prompt_tokens(messages)))
    return prompts
