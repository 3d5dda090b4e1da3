"""The OpenAI-compatible path against a local stub that streams known chunks at known times.

The stub records `time.monotonic()` just before writing each chunk; the client records its own
monotonic receive times (CLOCK_MONOTONIC is one clock for every process on the machine), so the
checks below compare the measurement with what the server really did, not with guessed durations.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadtest.metrics import Recorder, RequestRecord, count_tokens
from loadtest.targets import Generation, OpenAIEndpoint, TargetError, stream_openai

ROOT = Path(__file__).resolve().parent.parent
CHUNKS = ["宝宝", "体温", "37.3", "度", "不算", "发烧"]
FIRST_DELAY_S = 0.3
GAP_S = 0.25


class Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.calls: list[dict] = []  # per request: body, received_at, sent_at[]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class StubHandler(BaseHTTPRequestHandler):
    server: Stub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        received = time.monotonic()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        call = {"body": body, "auth": self.headers.get("Authorization"), "received_at": received, "sent_at": []}
        self.server.calls.append(call)
        if body["messages"][-1]["content"] == "refuse":
            data = b'{"error": {"message": "rate limited"}}'
            self.send_response(429)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})  # no text: not a token
        time.sleep(FIRST_DELAY_S)
        for i, text in enumerate(CHUNKS):
            if i:
                time.sleep(GAP_S)
            call["sent_at"].append(time.monotonic())
            self._event({"choices": [{"index": 0, "delta": {"content": text}}]})
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, payload: dict) -> None:
        self.wfile.write(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode())
        self.wfile.flush()


@pytest.fixture
def stub():
    server = Stub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def check_against_stub(record: RequestRecord, call: dict) -> None:
    """TTFT, TPOT and ITL as defined, consistent with when the stub sent each chunk."""
    sent, received = call["sent_at"], record.delta_times
    assert record.text == "".join(CHUNKS) and not record.error
    assert record.output_tokens == count_tokens("".join(CHUNKS))
    assert len(received) == len(CHUNKS)
    # Causality: the request left before the stub got it; no chunk arrives before it was sent, and each
    # arrives before the next is sent (the stub pauses GAP_S between chunks).
    assert record.start <= call["received_at"]
    for k, t in enumerate(received):
        assert t >= sent[k]
        if k + 1 < len(sent):
            assert t < sent[k + 1]
    assert record.ttft_s == received[0] - record.start
    assert record.ttft_s >= sent[0] - call["received_at"] >= FIRST_DELAY_S
    assert record.end >= received[-1] >= sent[-1]
    assert record.tpot_s == pytest.approx((record.e2e_s - record.ttft_s) / (record.output_tokens - 1), rel=1e-12)
    assert record.itl_s == pytest.approx([b - a for a, b in itertools.pairwise(received)], rel=1e-12)
    for k, gap in enumerate(record.itl_s):  # follows from the bracketing above
        assert gap < (sent[k + 2] if k + 2 < len(sent) else record.end + 1) - sent[k]


def test_openai_stream_is_timed_as_defined(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_KEY", "secret-1")
    endpoint = OpenAIEndpoint(stub.url, model="kimi-test", api_key_env="STUB_KEY")
    recorder = Recorder("stub", "q", 1, prompt_tokens=10, max_tokens=64)
    messages = [{"role": "user", "content": "宝宝15个月37.3度算发烧吗？"}]
    stream_openai(endpoint, Generation(max_tokens=64, ignore_eos=True).openai_body("kimi-test", messages),
                  recorder.delta)
    record = recorder.finish()
    call = stub.calls[0]
    assert call["auth"] == "Bearer secret-1"
    assert call["body"]["stream"] is True and call["body"]["model"] == "kimi-test"
    assert call["body"]["messages"] == messages and call["body"]["max_tokens"] == 64
    assert call["body"]["ignore_eos"] is True and call["body"]["min_tokens"] == 64
    check_against_stub(record, call)


def test_openai_errors_are_named(stub: Stub) -> None:
    endpoint = OpenAIEndpoint(stub.url)
    body = Generation().openai_body("m", [{"role": "user", "content": "refuse"}])
    with pytest.raises(TargetError, match="rate limited") as refused:
        stream_openai(endpoint, body, lambda _t: None)
    assert refused.value.kind == "HTTP 429"
    with pytest.raises(TargetError) as down:
        stream_openai(OpenAIEndpoint("http://127.0.0.1:9/v1"), body, lambda _t: None)
    assert down.value.kind == "Unreachable"
    with pytest.raises(ValueError, match="NO_SUCH_VAR"):
        OpenAIEndpoint(stub.url, api_key_env="NO_SUCH_VAR")


def test_locust_openai_user_measures_the_stub(stub: Stub, tmp_path: Path) -> None:
    """The Locust user (gevent, headless, its own process) records the same definitions."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
               "--host", stub.url, "--lt-target", "openai", "--lt-label", "stub", "--lt-steps", "1",
               "--lt-step-s", "60", "--lt-max-requests", "2", "--lt-out", str(out), "--csv", str(out / "locust"),
               "--only-summary", "--loglevel", "WARNING", "OpenAIChatUser"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (out / "requests.jsonl").read_text(encoding="utf-8").splitlines()
    records = [RequestRecord.from_json(json.loads(line)) for line in lines]
    assert len(records) >= 2 and len(stub.calls) >= 2
    for record, call in zip(records, stub.calls, strict=False):
        assert record.target == "stub" and record.concurrency == 1
        check_against_stub(record, call)
    stats = (out / "locust_stats.csv").read_text()
    assert "HTTP,seed5" in stats
