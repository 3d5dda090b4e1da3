"""Against the session's real Triton server: the sweep runner, a short headless Locust run with its
report, and the seed-style baseline giving the same greedy answer as the deployment."""

from __future__ import annotations

import json
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
    assert "replica(s)" in summary["capacity"]["line"] or "No tested concurrency" in summary["capacity"]["line"]


def test_sweep_says_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert sweep.main(["--url", "127.0.0.1:1", "--requests-per-level", "1", "--duration-s", "1"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert sweep.main(["--url", f"127.0.0.1:{free_port()}", "--requests-per-level", "1", "--out", str(tmp_path)]) == 3
    assert "cannot be used" in capsys.readouterr().err


def test_headless_locust_run_writes_every_report_file(triton_server, tmp_path: Path) -> None:
    out = tmp_path / "loadtest"
    code = run.main(["--url", triton_server.grpc_url, "--steps", "1,2", "--step-s", "5", "--max-tokens", "12",
                     "--workload", "mixed", "--out", str(out),
                     # an SLO any machine meets, so the capacity answer is a replica count (CI is slow and shared)
                     "--slo-ttft-ms", "60000", "--slo-tpot-ms", "10000"])
    assert code == 0
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv", "locust.html",
                 "requests.jsonl", "summary.json", "report.md", "report.html", "latency.png", "throughput.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["levels"]) == {"1", "2"}
    for level in summary["levels"].values():
        assert level["completed"] > 0
        assert level["median_ttft_ms"] > 0 and level["median_tpot_ms"] > 0 and level["median_e2el_ms"] > 0
        assert level["output_throughput"] > 0 and level["request_throughput"] > 0
    assert summary["capacity"]["max_concurrency"] == 2
    assert summary["capacity"]["line"].startswith("250 replica(s)"), summary["capacity"]["line"]
    # gevent + grpc (init_gevent): the two users' streams overlapped instead of taking turns.
    pair = [r for r in _records(out / "requests.jsonl") if r.concurrency == 2 and r.ok]
    assert any(a.start < b.start < a.end for a in pair for b in pair if a is not b)
    assert "| 2 |" in (out / "report.md").read_text()


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
