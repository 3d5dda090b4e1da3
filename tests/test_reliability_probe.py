"""The container probe (`python -m serving.probe`, what the chart's readiness and liveness probes run) sees a
dead engine process that Triton's own health endpoints do not (issue 15).

An unsupervised tritonserver of its own, as the chart runs it (no supervisor to restart anything).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_servers import wait_until

from serving.launch import free_port, python_models, stub_pids
from tests.servers import RunningServer, serve
from wingpt.settings import ServerSettings

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    settings = ServerSettings.from_env(
        target="cpu", repo_dir=str(ROOT / "build" / "test-probe-repository"), http_port=free_port(),
        grpc_port=free_port(), metrics_port=free_port(), max_batch_size=2, max_queue_size=2, context_window=512,
        max_tokens_default=8, max_tokens_limit=64)
    with serve(settings, ROOT / "test-output" / "tritonserver-probe.log") as running:
        yield running


def probe(server: RunningServer, kind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving.probe", kind, "--repository", server.settings.repo_dir,
         "--pid", str(server.process.pid), "--http-port", str(server.settings.http_port)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def triton_ready(server: RunningServer) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.settings.http_port}/v2/health/ready", timeout=5) as r:
        return r.status


def test_the_probe_checks_every_python_backend_model_of_the_repository(server):
    assert "torch_llm" in python_models(Path(server.settings.repo_dir))  # the engine, and its orchestration models
    assert probe(server, "ready").returncode == 0
    assert probe(server, "live").returncode == 0


def test_a_dead_engine_process_fails_the_probe_while_triton_still_says_ready(server):
    (stub,) = stub_pids(server.process.pid, "torch_llm")
    os.kill(stub, signal.SIGKILL)
    assert wait_until(lambda: not stub_pids(server.process.pid, "torch_llm"), 30)
    assert triton_ready(server) == 200, "Triton 2.51 keeps claiming readiness (why the probe exists)"
    for kind in ("ready", "live"):
        result = probe(server, kind)
        assert result.returncode == 1
        assert "torch_llm" in result.stderr and "is gone" in result.stderr, result.stderr
