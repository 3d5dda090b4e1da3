"""The load test's "peak with emergencies" scenario: its workload and its per-class report."""

from __future__ import annotations

import itertools
import json

from loadtest.emergencies import class_of, peak_with_emergencies, summarize
from loadtest.metrics import RequestRecord
from wingpt.chat_template import parse_messages
from wingpt.safety import RulesWatcher


def test_the_workload_mixes_in_emergencies_at_the_given_share_and_the_triage_agrees():
    prompts = list(itertools.islice(peak_with_emergencies(0.2), 50))
    emergencies = [p for p in prompts if p.name.startswith("emergency-")]
    assert len(emergencies) == 10
    assessor = RulesWatcher(None).assessor()
    levels = {p.name.split("-")[0]: set() for p in prompts}
    for p in prompts:
        levels[p.name.split("-")[0]].add(assessor.assess(parse_messages(json.dumps(p.as_messages()))).level)
    assert levels == {"emergency": {"emergency"}, "qizhen": {"none"}}
    assert not [p for p in itertools.islice(peak_with_emergencies(0), 50) if p.name.startswith("emergency-")]


def test_the_report_counts_served_and_overloaded_requests_and_ttft_per_class():
    def record(name: str, ttft: float | None, error: str = "") -> RequestRecord:
        return RequestRecord("triton", name, 16, start=10.0, end=12.0,
                             delta_times=[] if ttft is None else [10.0 + ttft], error=error)
    records = [record("emergency-1", 0.1), record("emergency-2", 0.3),
               record("qizhen-drug-1", 1.0), record("qizhen-drug-2", None, "OverloadedError: [UNAVAILABLE] server "
                                                                             "overloaded: 2 requests running"),
               record("qizhen-drug-3", None, "InternalError: boom")]
    assert [class_of(r) for r in records] == ["emergency", "emergency", "ordinary", "ordinary", "ordinary"]
    summary = summarize(records)
    emergency = summary["emergency"]
    assert (emergency["sent"], emergency["served"], emergency["overloaded"]) == (2, 2, 0)
    assert round(emergency["p50_ttft_ms"]) == 200
    assert summary["ordinary"]["served"] == 1 and summary["ordinary"]["overloaded"] == 1
    assert summary["ordinary"]["other_errors"] == 1 and round(summary["ordinary"]["p50_ttft_ms"]) == 1000
