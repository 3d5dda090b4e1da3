"""A Triton server started by a test module or session: its settings, process and log."""

from __future__ import annotations

import contextlib
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from serving.__main__ import render_from_settings
from serving.launch import start_server, stop_server, wait_ready
from wingpt.settings import ServerSettings


@dataclass(frozen=True)
class RunningServer:
    settings: ServerSettings
    process: subprocess.Popen
    log_path: Path

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port}/metrics"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def engine_requests(self, request_type: str) -> float:
        """The engine's `nv_trt_llm_request_metrics` count of one type (active, waiting, ...), from /metrics."""
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        for line in text.splitlines():
            match = re.match(r"nv_trt_llm_request_metrics\{(.*)\} (\S+)$", line)
            if match and f'request_type="{request_type}"' in match.group(1).split(","):
                return float(match.group(2))
        raise KeyError(f"nv_trt_llm_request_metrics{{request_type={request_type!r}}} not in the metrics")


@contextlib.contextmanager
def serve(settings: ServerSettings, log_path: Path) -> Iterator[RunningServer]:
    """Render the repository for `settings`, start an unsupervised tritonserver on it, stop it afterwards."""
    repo = render_from_settings(settings, {})
    log_path.parent.mkdir(exist_ok=True)
    log_path.write_text("")
    process = start_server(repo, settings, log_path)
    try:
        wait_ready(settings, process, timeout_s=240)
        yield RunningServer(settings, process, log_path)
    finally:
        stop_server(process)
