"""Local servers a load test starts for itself when no URL is given: Triton on the embedded default
(through serving/, as `make serve` does) and the seed-style baseline. Loopback, free ports, stopped
when the run ends."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from serving.__main__ import render_from_settings
from serving.launch import free_port, start_server, stop_server, wait_ready
from wingpt.settings import ServerSettings


@contextlib.contextmanager
def local_triton(work_dir: Path) -> Iterator[str]:
    """Triton with the embedded default on free loopback ports (other settings from the environment,
    e.g. WINGPT_MAX_BATCH_SIZE); yields the gRPC `host:port`."""
    settings = ServerSettings.from_env(target="cpu", host="127.0.0.1", repo_dir=str(work_dir / "model-repository"),
                                       http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    repo = render_from_settings(settings, {})
    process = start_server(repo, settings, work_dir / "tritonserver.log")
    try:
        wait_ready(settings, process, timeout_s=300)
        yield f"127.0.0.1:{settings.grpc_port}"
    finally:
        stop_server(process)


@contextlib.contextmanager
def local_seed_baseline(work_dir: Path, device: str = "cpu") -> Iterator[str]:
    """The seed-style baseline on a free loopback port; yields its OpenAI base URL."""
    port = free_port()
    log = (work_dir / "seed-baseline.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "loadtest.baselines.seed_server", "--device", device,
                                "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"seed-style baseline exited with code {process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"seed-style baseline not ready after 300 s; see {log.name}") from None
                time.sleep(0.5)
        yield base + "/v1"
    finally:
        stop_server(process)
        log.close()
