"""The measurement definitions and the report generator, on fixed input data."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from loadtest.capacity import Search, capacity_answer, chart_profile, find_knee, next_level, plan_replicas
from loadtest.metrics import RequestRecord, Slo, count_tokens, summarize, summarize_levels
from loadtest.report import system_summary, write_report
from loadtest.workloads import build_workload, pad_to_tokens, prompt_tokens

ROOT = Path(__file__).resolve().parent.parent


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


def test_levels_are_grouped_by_concurrency_and_judged_against_the_slo() -> None:
    fast = [_record(c, float(i), [i + 0.05, i + 0.06], i + 0.3, tokens=10) for c in (1, 2) for i in range(4)]
    slow = [_record(4, float(i), [i + 2.0], i + 3.0, tokens=10) for i in range(4)]
    levels = summarize_levels(fast + slow, Slo())
    assert sorted(levels) == [1, 2, 4]
    assert levels[1]["duration_s"] == pytest.approx(3.3)  # first start to last end
    assert [levels[c]["meets_slo"] for c in (1, 2, 4)] == [True, True, False]


def _recorded_run(levels: Sequence[int], knee: int) -> list[RequestRecord]:
    """Four requests per level: 50 ms TTFT up to `knee`, 2 s beyond it (over the default 1 s SLO)."""
    records = []
    for c in levels:
        ttft = 0.05 if c <= knee else 2.0
        records += [_record(c, float(i), [i + ttft, i + ttft + 0.01], i + ttft + 0.1, tokens=10) for i in range(4)]
    return records


def _search(passes: Callable[[int], bool], search: Search) -> list[int]:
    """The levels the knee search measures against a system where `passes(c)` says whether c meets the SLO."""
    verdicts: dict[int, bool] = {}
    while (level := next_level(verdicts, search)) is not None:
        assert level not in verdicts, "a level is measured once"
        verdicts[level] = passes(level)
    return list(verdicts)


def test_the_search_doubles_until_the_slo_fails_then_bisects_to_the_resolution() -> None:
    assert _search(lambda c: c <= 13, Search(1, 64, 1)) == [1, 2, 4, 8, 16, 12, 14, 13]
    assert _search(lambda c: c <= 13, Search(1, 64, 4)) == [1, 2, 4, 8, 16, 12]  # 12 passes, 16 fails: 4 apart
    assert _search(lambda c: c <= 3, Search(8, 64, 1)) == [8, 4, 2, 3]  # the start fails: halve, then bisect
    assert _search(lambda c: False, Search(4, 64, 1)) == [4, 2, 1]  # nothing meets it, down to 1
    assert _search(lambda c: True, Search(1, 20, 1)) == [1, 2, 4, 8, 16, 20]  # bounded by the maximum
    with pytest.raises(ValueError, match="--max-concurrency"):
        Search(8, 4, 1)
    with pytest.raises(ValueError, match="--resolution"):
        Search(1, 8, 0)


def test_a_run_that_fails_reports_the_bisected_knee_with_the_figures_either_side(tmp_path) -> None:
    order = _search(lambda c: c <= 13, Search(1, 64, 1))
    summary = system_summary("triton", _recorded_run(order, knee=13), Slo(), patients=500,
                             search=Search(1, 64, 1))
    cap = summary["capacity"]
    assert (cap["status"], cap["knee"], cap["first_failing"], cap["tried_up_to"]) == ("knee", 13, 14, 16)
    assert cap["below"]["slo_attainment"] == 1.0 and cap["below"]["p95_ttft_ms"] == pytest.approx(50.0)
    assert cap["above"]["slo_attainment"] == 0.0 and cap["above"]["p95_ttft_ms"] == pytest.approx(2000.0)
    assert cap["line"].startswith("Capacity of triton: 13 concurrent chats per replica meet the SLO "
                                  "(knee between 13 and 14; at 13: 100% of 4 requests met it, TTFT p95 50 ms")
    # ceil(500 / 13) = 39 serving + 1 spare (PodDisruptionBudget maxUnavailable 1) = 40, one GPU each (7B INT4)
    assert (cap["plan"]["serving_replicas"], cap["plan"]["replicas"], cap["plan"]["gpus"]) == (39, 40, 40)
    assert cap["plan"]["upper_bound"] is False
    assert "40 replica(s) = ceil(500 / 13) = 39 serving + 1 spare" in cap["line"] and "at most" not in cap["line"]
    write_report(tmp_path, summary)
    md = (tmp_path / "report.md").read_text()
    assert "| 13 ← knee |" in md and "| 14 ← first failing |" in md


def test_a_run_that_never_fails_reports_at_least_and_an_upper_bound_replica_count(tmp_path) -> None:
    summary = system_summary("triton", _recorded_run([1, 2, 4, 8], knee=1000), Slo(), patients=500)
    cap = summary["capacity"]
    assert (cap["status"], cap["knee"], cap["first_failing"]) == ("at_least", 8, None)
    assert cap["line"].startswith("Capacity of triton: at least 8 concurrent chats per replica "
                                  "(the SLO held at every level tried up to 8")
    assert cap["plan"]["upper_bound"] is True
    assert "at most 64 replica(s) = ceil(500 / 8) = 63 serving + 1 spare" in cap["line"]
    assert "An upper bound" in cap["line"]
    write_report(tmp_path, summary)
    assert "| 8 ← at least (nothing failed) |" in (tmp_path / "report.md").read_text()


def test_levels_passing_above_the_first_failure_do_not_count() -> None:
    levels = {1: {"meets_slo": True}, 2: {"meets_slo": False}, 4: {"meets_slo": True}}
    knee = find_knee(levels)
    assert (knee.status, knee.concurrency, knee.first_failing, knee.not_counted) == ("knee", 1, 2, (4,))
    nothing = capacity_answer("sys", {1: {"meets_slo": False}, 2: {"meets_slo": True}}, 10)
    assert (nothing["status"], nothing["knee"], nothing["plan"]) == ("none", None, None)
    assert nothing["line"].startswith("No tested concurrency met the SLO on sys (it failed already at 1")


def test_replicas_add_the_disruption_budget_spare_and_gpus_follow_the_chart_profile() -> None:
    seven = plan_replicas(500, 32, "7b-int4")
    assert (seven.serving_replicas, seven.replicas, seven.gpus) == (16, 17, 17)  # ceil(500/32) + 1, 1 GPU each
    fourteen = plan_replicas(500, 32, "14b-tp2")
    assert (fourteen.replicas, fourteen.gpus) == (17, 34)  # tensor parallel 2: two GPUs per replica
    assert (plan_replicas(64, 32).serving_replicas, plan_replicas(64, 32).replicas) == (2, 3)  # exact division
    assert plan_replicas(500, 32, "cpu-dev").gpus == 0
    assert [chart_profile(p).gpus_per_replica for p in ("7b-int4", "14b-tp2")] == [1, 2]
    assert chart_profile("7b-int4").spare_replicas == 1  # pdb.maxUnavailable of helm/wingpt/values.yaml
    with pytest.raises(ValueError, match="--profile"):
        plan_replicas(500, 32, "70b")
    with pytest.raises(ValueError, match="--per-replica"):
        plan_replicas(500, 0)


def test_the_readme_and_the_helm_docs_quote_the_replica_function() -> None:
    """Their examples are this function's output, so a change to the chart's budget or the formula shows here."""
    def text(name: str) -> str:
        return " ".join((ROOT / name).read_text(encoding="utf-8").split())

    def quoted(patients: int, knee: int, profile: str = "7b-int4") -> str:
        plan = plan_replicas(patients, knee, profile)
        return (f"ceil({patients} / {knee}) = {plan.serving_replicas} serving + {plan.profile.spare_replicas} spare "
                f"= {plan.replicas} replicas, {plan.gpus} GPUs")

    assert quoted(500, 112) in text("README.md")
    assert quoted(500, 40) in text("docs/helm.md")
    assert f"{plan_replicas(500, 40, '14b-tp2').gpus} GPUs for 14B tp 2" in text("docs/helm.md")


def test_report_files_and_numbers(tmp_path) -> None:
    records = [_record(c, float(i), [i + 0.1, i + 0.2], i + 1.0, tokens=9) for c in (1, 2) for i in range(3)]
    summary = system_summary("sys", records, Slo(tpot_ms=200), patients=7)
    write_report(tmp_path, summary, command="make loadtest")
    for name in ("summary.json", "report.md", "report.html", "latency.png", "throughput.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["levels"]["1"]["median_ttft_ms"] == pytest.approx(100.0)
    assert saved["levels"]["2"]["median_tpot_ms"] == pytest.approx(900 / 8)
    assert saved["capacity"]["plan"]["replicas"] == 5  # ceil(7 / 2) + 1 spare
    md = (tmp_path / "report.md").read_text()
    assert "| 1 | 3 | 0 | 100.0 |" in md and "at most 5 replica(s)" in md and "make loadtest" in md
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
