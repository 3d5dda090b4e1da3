"""The cost budget (p99 < 1 ms per request) and the benchmark that shows it."""

from __future__ import annotations

import json
import time

import pytest

from wingpt.chat_template import Message
from wingpt.safety import TriageAssessor, load_rules
from wingpt.safety.bench import main


def test_bench_prints_a_table_then_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--requests", "200"])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["bench"] == "safety"
    assert summary["realistic chats"]["requests"] == 200
    assert any(line.startswith("realistic chats") for line in lines)


def test_a_typical_request_costs_well_under_a_millisecond() -> None:
    """A loose bound (the benchmark gives the real figures): the median of a multi-turn chat."""
    assessor = TriageAssessor(load_rules())
    chat = [Message("user", "我胸口痛"), Message("assistant", "还有其他症状吗？"), Message("user", "现在出了一身冷汗")]
    timings = []
    for _ in range(300):
        start = time.perf_counter()
        assessor.assess(chat)
        timings.append(time.perf_counter() - start)
    assert sorted(timings)[len(timings) // 2] < 0.001
