"""A Triton server started by a test module or session: its settings, process and log."""

from __future__ import annotations

import subprocess
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
