"""Against the session's real Triton server: the sweep runner and its knee search, a short headless Locust
run with its report, and the seed-style baseline giving the same greedy answer as the deployment."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from wingpt_client import WingptClient

from loadtest import run, sweep
from loadtest.metrics import RequestRecord
from loadtest.workloads import build_workload
from serving.launch import free_port

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent


def _records(path: Path) -> list[RequestRecord]:
    return [RequestRecord.from_json(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]


def test_sweep_runner_reports_every_level(triton_server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    code = sweep.main(["--target", "triton", "--url", triton_server.grpc_url, "--concurrency", "1,3",
                       "--requests-per-level", "6", "--workload", "mixed", "--max-tokens", "16",
                       "--prompt-tokens", "128", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:3] == ["conc", "reqs", "err"]
    summary = json.loads(printed[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    assert set(summary["levels"]) == {"1", "3"}
    for level in summary["levels"].values():
        assert level["requests"] == 6 and level["failed"] == 0
        assert level["median_ttft_ms"] > 0 and level["median_tpot_ms"] > 0 and level["median_itl_ms"] > 0
        assert level["output_throughput"] > 0 and level["request_throughput"] > 0
        assert level["mean_input_tokens"] >= 128
    records = _records(out / "requests.jsonl")
    assert len(records) == 12 and {r.concurrency for r in records} == {1, 3}
    assert all(r.output_tokens > 0 and r.text for r in records)
    assert summary["capacity"]["status"] in ("knee", "at_least", "none")  # the default SLO on a shared CI box
    assert summary["capacity"]["line"].startswith(("Capacity of triton:", "No tested concurrency"))


def _wait_idle(server, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while server.engine_requests("active") or server.engine_requests("waiting"):
        assert time.monotonic() < deadline, "the engine is still busy with an earlier test's requests"
        time.sleep(0.1)


def test_find_capacity_ends_at_a_failing_level_and_reports_the_knee_below_it(
        triton_server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Deterministic by construction, whatever the machine's speed. The SLO counts only errors (attainment
    100 %, latency bounds of an hour). The session server's engine holds at most 4 running and 8 waiting
    requests and refuses at once (OverloadedError) a request that finds 8 waiting. With 8 users a request
    finds at most 7 others anywhere, so no level up to 8 can be refused: the search starts there and passes.
    At 16 users (and 32) the first wave is 16 requests sent together, each generating exactly 64 tokens, and
    at most 12 of them fit until one has finished all its tokens, so at least 4 are refused (the wave reaches
    the engine long before 64 decode steps are done): the search ends at a failing level above the knee."""
    _wait_idle(triton_server)
    out = tmp_path / "knee"
    code = sweep.main(["--target", "triton", "--url", triton_server.grpc_url, "--find-capacity",
                       "--start-concurrency", "8", "--max-concurrency", "32", "--resolution", "4",
                       "--requests-per-level", "16", "--warmup", "0", "--workload", "seed5", "--max-tokens", "64",
                       "--ignore-eos", "--slo-ttft-ms", "3600000", "--slo-tpot-ms", "3600000",
                       "--slo-attainment", "1", "--patients", "100", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    summary = json.loads(printed[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    cap = summary["capacity"]
    assert cap["status"] == "knee" and cap["search"] == {"start": 8, "maximum": 32, "resolution": 4}
    assert 8 <= cap["knee"] < cap["first_failing"] <= 32
    assert cap["first_failing"] - cap["knee"] <= 4  # bisected to the resolution
    assert summary["levels_in_order"][0] == 8 and cap["first_failing"] in summary["levels_in_order"]
    failing = summary["levels"][str(cap["first_failing"])]
    assert failing["meets_slo"] is False and failing["errors"].get("OverloadedError", 0) > 0
    assert cap["above"]["failed"] == failing["failed"] > 0
    knee = summary["levels"][str(cap["knee"])]
    assert knee["meets_slo"] is True and knee["failed"] == 0 and cap["below"]["slo_attainment"] == 1.0
    assert cap["line"].startswith(f"Capacity of triton: {cap['knee']} concurrent chats per replica meet the SLO")
    assert cap["plan"]["replicas"] == math.ceil(100 / cap["knee"]) + 1 and cap["plan"]["upper_bound"] is False
    assert any(line.startswith(f"{cap['knee']:>5}") and line.endswith("<- knee") for line in printed)


def test_sweep_says_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert sweep.main(["--url", "127.0.0.1:1", "--requests-per-level", "1", "--duration-s", "1"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert sweep.main(["--url", f"127.0.0.1:{free_port()}", "--requests-per-level", "1", "--out", str(tmp_path)]) == 3
    assert "cannot be used" in capsys.readouterr().err


def test_headless_locust_knee_search_writes_every_report_file(triton_server, tmp_path: Path) -> None:
    out = tmp_path / "loadtest"
    code = run.main(["--url", triton_server.grpc_url, "--find-capacity", "--max-concurrency", "2", "--step-s", "5",
                     "--max-tokens", "12", "--workload", "mixed", "--out", str(out),
                     # an SLO any machine meets, so the search runs up to its bound (CI is slow and shared)
                     "--slo-ttft-ms", "60000", "--slo-tpot-ms", "10000"])
    assert code == 0
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv", "locust.html",
                 "requests.jsonl", "search.json", "summary.json", "report.md", "report.html", "latency.png",
                 "throughput.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["levels"]) == {"1", "2"}
    for level in summary["levels"].values():
        assert level["completed"] > 0
        assert level["median_ttft_ms"] > 0 and level["median_tpot_ms"] > 0 and level["median_e2el_ms"] > 0
        assert level["output_throughput"] > 0 and level["request_throughput"] > 0
    assert [step["users"] for step in summary["search_steps"]] == [1, 2]  # doubled up to the bound, then stopped
    assert all(step["meets_slo"] for step in summary["search_steps"])
    cap = summary["capacity"]
    assert (cap["status"], cap["knee"], cap["first_failing"]) == ("at_least", 2, None)
    assert cap["line"].startswith("Capacity of triton: at least 2 concurrent chats per replica "
                                  "(the SLO held at every level tried up to 2"), cap["line"]
    assert cap["plan"]["upper_bound"] is True and "at most 251 replica(s)" in cap["line"]  # ceil(500 / 2) + 1
    # gevent + grpc (init_gevent): the two users' streams overlapped instead of taking turns.
    pair = [r for r in _records(out / "requests.jsonl") if r.concurrency == 2 and r.ok]
    assert any(a.start < b.start < a.end for a in pair for b in pair if a is not b)
    assert "| 2 ← at least (nothing failed) |" in (out / "report.md").read_text()


def test_seed_baseline_answers_like_the_deployment(triton_server, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "seed.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "loadtest.baselines.seed_server", "--port", str(port)],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/health", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "seed.log").read_text()
                time.sleep(0.5)
        question = build_workload("seed5")[3].as_messages()

        def post(body: dict) -> tuple[int, dict]:
            request = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, whole = post({"messages": question, "max_tokens": 16})
        assert status == 200 and whole["usage"]["completion_tokens"] <= 16
        with WingptClient(triton_server.grpc_url) as client:
            deployed = client.chat(question, max_tokens=16)
        assert whole["choices"][0]["message"]["content"] == deployed  # same model, template, greedy decoding
        status, error = post({"messages": [{"role": "doctor", "content": "x"}]})
        assert status == 400 and error["error"]["param"] == "messages[0].role"
        status, error = post({"messages": question, "max_tokens": 0})
        assert status == 400 and "max_tokens" in error["error"]["message"]
        status, again = post({"messages": question, "max_tokens": 16, "ignore_eos": True})  # still serving
        assert status == 200 and again["usage"]["completion_tokens"] == 16
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
