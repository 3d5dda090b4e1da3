"""A Triton server started by a test module or session: its settings, process and log."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

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
