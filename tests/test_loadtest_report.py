"""The measurement definitions and the report generator, on fixed input data."""

from __future__ import annotations

import json

import pytest

from loadtest.metrics import RequestRecord, Slo, capacity, count_tokens, summarize, summarize_levels
from loadtest.report import system_summary, write_report
from loadtest.workloads import build_workload, pad_to_tokens, prompt_tokens


def _record(concurrency: int, start: float, deltas: list[float], end: float, tokens: int,
            error: str = "") -> RequestRecord:
    return RequestRecord("sys", "p", concurrency, start, end, deltas, "x" * tokens, tokens, 20, 64, error)


def test_per_request_metrics_follow_the_vllm_definitions() -> None:
    r = _record(1, 10.0, [10.2, 10.3, 10.5, 10.6], 10.7, tokens=11)
    assert r.ttft_s == pytest.approx(0.2)
    assert r.e2e_s == pytest.approx(0.7)
    assert r.tpot_s == pytest.approx((0.7 - 0.2) / 10)  # (e2e - ttft) / (output tokens - 1)
    assert r.itl_s == pytest.approx([0.1, 0.2, 0.1])
    assert _record(1, 0.0, [0.1], 0.1, tokens=1).tpot_s is None


def test_summary_figures_on_fixed_records() -> None:
    records = [
        _record(2, 0.0, [0.1, 0.2], 1.0, tokens=9),   # TTFT 100 ms, TPOT 112.5 ms
        _record(2, 0.0, [0.5, 0.6], 2.0, tokens=16),  # TTFT 500 ms, TPOT 100 ms
        _record(2, 1.0, [1.1], 3.0, tokens=20),       # TTFT 100 ms, TPOT 100 ms
        _record(2, 2.0, [], 4.0, tokens=0, error="OverloadedError: queue full"),
    ]
    slo = Slo(ttft_ms=200, tpot_ms=110, attainment=0.5)
    s = summarize(records, duration_s=4.0, slo=slo)
    assert (s["requests"], s["completed"], s["failed"]) == (4, 3, 1)
    assert s["error_rate"] == 0.25 and s["errors"] == {"OverloadedError": 1}
    assert s["total_output_tokens"] == 45
    assert s["output_throughput"] == pytest.approx(45 / 4.0)
    assert s["request_throughput"] == pytest.approx(3 / 4.0)
    assert s["median_ttft_ms"] == pytest.approx(100.0)
    assert s["mean_ttft_ms"] == pytest.approx(700 / 3)
    assert s["median_tpot_ms"] == pytest.approx(100.0)
    assert s["p99_tpot_ms"] == pytest.approx(100 + 12.5 * 0.98)  # numpy's linear interpolation
    assert s["median_itl_ms"] == pytest.approx(100.0)
    assert s["median_e2el_ms"] == pytest.approx(2000.0)
    # Only the third request meets TTFT <= 200 ms and TPOT <= 110 ms; the failed one counts against.
    assert s["slo_attainment"] == pytest.approx(0.25)
    assert s["request_goodput"] == pytest.approx(1 / 4.0)
    assert s["meets_slo"] is False
    assert s["share_at_max_tokens"] == 0.0


def test_levels_capacity_and_planner_line() -> None:
    fast = [_record(c, float(i), [i + 0.05, i + 0.06], i + 0.3, tokens=10) for c in (1, 2) for i in range(4)]
    slow = [_record(4, float(i), [i + 2.0], i + 3.0, tokens=10) for i in range(4)]
    levels = summarize_levels(fast + slow, Slo())
    assert sorted(levels) == [1, 2, 4]
    assert levels[1]["duration_s"] == pytest.approx(3.3)  # first start to last end
    assert [levels[c]["meets_slo"] for c in (1, 2, 4)] == [True, True, False]
    cap = capacity(levels, patients=500)
    assert (cap.max_concurrency, cap.replicas) == (2, 250)
    assert cap.line("triton").startswith("250 replica(s) of this engine (triton) for 500 concurrent patients")
    assert capacity({1: {"meets_slo": False}, 2: {"meets_slo": True}}, 10).max_concurrency is None


def test_report_files_and_numbers(tmp_path) -> None:
    records = [_record(c, float(i), [i + 0.1, i + 0.2], i + 1.0, tokens=9) for c in (1, 2) for i in range(3)]
    summary = system_summary("sys", records, Slo(tpot_ms=200), patients=7)
    write_report(tmp_path, summary, command="make loadtest")
    for name in ("summary.json", "report.md", "report.html", "latency.png", "throughput.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["levels"]["1"]["median_ttft_ms"] == pytest.approx(100.0)
    assert saved["levels"]["2"]["median_tpot_ms"] == pytest.approx(900 / 8)
    assert saved["capacity"]["replicas"] == 4  # ceil(7 / 2)
    md = (tmp_path / "report.md").read_text()
    assert "| 1 | 3 | 0 | 100.0 |" in md and "4 replica(s)" in md and "make loadtest" in md
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_output_tokens_are_counted_with_the_qwen_tokenizer() -> None:
    assert count_tokens("") == 0
    assert count_tokens("宝宝发烧") == count_tokens("宝宝") + count_tokens("发烧") > 0


@pytest.mark.parametrize("target", [128, 600])
def test_prompts_are_padded_to_the_requested_templated_length(target: int) -> None:
    for natural, prompt in zip(build_workload("mixed"), build_workload("mixed", target), strict=True):
        assert prompt.prompt_tokens == prompt_tokens(prompt.as_messages())
        assert prompt.messages[-len(natural.messages):] == natural.messages
        if natural.prompt_tokens >= target:
            assert prompt == natural
        else:
            assert target - 2 <= prompt.prompt_tokens <= target
    messages = [{"role": "user", "content": "宝宝15个月37.3度算发烧吗？"}]
    padded = pad_to_tokens(messages, 300)
    assert padded[-1] == messages[0] and padded[0]["role"] == "user"


def test_workloads_are_chat_messages_ending_with_the_patient() -> None:
    for name in ("seed5", "qizhen", "triage"):
        prompts = build_workload(name)
        assert prompts and all(p.messages[-1]["role"] == "user" for p in prompts)
    assert build_workload("seed5")[3].messages[-1]["content"] == "宝宝15个月37.3度算发烧吗？"
    with pytest.raises(ValueError, match="unknown workload"):
        build_workload("nope")
