"""`python -m openai_api` processes started by the OpenAI endpoint tests, in front of a Triton server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from serving.launch import free_port
from tests.reliability_servers import wait_until

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"


@dataclass(frozen=True)
class Endpoint:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:  # not listening yet
            return 0

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def running_endpoint(name: str, triton_url: str, *args: str, **env: str) -> Iterator[Endpoint]:
    """The endpoint on a free loopback port, with the test server's token budgets; stopped afterwards."""
    OUTPUT.mkdir(exist_ok=True)
    port = free_port()
    log_path = OUTPUT / f"openai-{name}.log"
    environment = {**os.environ, **env,
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "client"),
                                                                os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "openai_api", "--triton-url", triton_url, "--port", str(port),
               "--max-tokens", "32", "--context-window", "512", *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    endpoint = Endpoint(process, port, log_path)
    try:
        assert wait_until(lambda: process.poll() is not None or endpoint.get("/health/live") == 200, 60), \
            endpoint.log_text()
        assert process.poll() is None, endpoint.log_text()
        yield endpoint
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
