"""The cost budget (p99 < 1 ms per request) and the benchmark that shows it."""

from __future__ import annotations

import json

import pytest

from wingpt.safety.bench import main


def test_bench_prints_a_table_then_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--requests", "200"])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["bench"] == "safety"
    assert summary["realistic chats"]["requests"] == 200
    assert any(line.startswith("realistic chats") for line in lines)

