"""Servers of their own for the reliability tests that kill, stop or flood them.

The session's `triton_server` is shared by the whole suite, so a test that kills the engine or
sends SIGTERM starts one of these instead (rendered into its own repository directory).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from serving.launch import child_pids, free_port, rss_kib, stub_pids, wait_ready
from tests.servers import RunningServer
from wingpt.settings import ServerSettings

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"




def wait_until(condition: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> bool:
    """Poll `condition` (an observation, not a timing assertion) until it holds or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return condition()


# Small limits so that a flood, a deadline or a cancel is quick to provoke on a CPU.
SMALL = {
    "WINGPT_TARGET": "cpu",
    "WINGPT_MAX_BATCH_SIZE": "4",
    "WINGPT_MAX_QUEUE_SIZE": "8",
    "WINGPT_CONTEXT_WINDOW": "512",
    "WINGPT_MAX_TOKENS_DEFAULT": "32",
    "WINGPT_MAX_TOKENS_LIMIT": "256",
    "TRITON_EXIT_TIMEOUT": "30",
    # The OpenAI-compatible endpoint would bind port 9000; tests that want it pass WINGPT_OPENAI=1 and a free port.
    "WINGPT_OPENAI": "0",
}


@dataclass(frozen=True)
class OwnServer(RunningServer):
    """`python -m serving serve` (the supervisor and the tritonserver it runs) on free ports;
    `process` is the supervisor."""

    def server_pid(self) -> int | None:
        """The tritonserver process the supervisor runs now (it changes when it restarts it)."""
        for pid in child_pids(self.process.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"tritonserver"):
                    return pid
        return None

    def engine_stub_pids(self) -> list[int]:
        pid = self.server_pid()
        return stub_pids(pid, "torch_llm") if pid else []

    def rss_kib(self) -> int:
        """tritonserver and all its stub processes together."""
        pid = self.server_pid()
        return rss_kib([pid, *child_pids(pid)]) if pid else 0

    def metric(self, name: str, **labels: str) -> float:
        """One Prometheus sample; 0 when the series does not exist yet (counters appear on first use)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        want = {f'{k}="{v}"' for k, v in labels.items()}
        for line in text.splitlines():
            match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
            if match and want <= set(match.group(1).split(",")):
                return float(match.group(2))
        return 0.0

    def engine(self, request_type: str) -> float:
        return self.metric("nv_trt_llm_request_metrics", model="torch_llm", request_type=request_type)

    def wait_ready(self, timeout_s: float = 240) -> None:
        wait_ready(self.settings, self.process, timeout_s=timeout_s)

    def stop(self, timeout_s: float = 90) -> int:
        """SIGTERM (Triton drains in-flight streams), SIGKILL of the whole group if that hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        return self.process.returncode


def start_own_server(name: str, **env: str) -> OwnServer:
    """A small embedded-model server, supervised as `make serve` runs it, with its own repository and log."""
    OUTPUT.mkdir(exist_ok=True)
    ports = {"TRITON_HTTP_PORT": str(free_port()), "TRITON_GRPC_PORT": str(free_port()),
             "TRITON_METRICS_PORT": str(free_port())}
    environment = {**os.environ, **SMALL, **ports, **env,
                   "WINGPT_REPO_DIR": str(ROOT / "build" / f"test-{name}-repository"),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    settings = ServerSettings.from_env(**{f.name: _from(environment, f.metadata["env"], f.type)
                                          for f in fields(ServerSettings)})
    log_path = OUTPUT / f"tritonserver-{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen([sys.executable, "-m", "serving", "serve"], cwd=ROOT, env=environment,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    server = OwnServer(settings, process, log_path)
    try:
        server.wait_ready()
    except Exception:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return server


def _from(environment: dict[str, str], name: str, kind: object) -> object:
    raw = environment.get(name)
    if raw in (None, ""):
        return None
    return int(raw) if kind == "int" else raw
