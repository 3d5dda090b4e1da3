"""Hands a request's triage from the preprocessing step to the postprocessing step.

Triton refuses an ensemble whose outputs come both from a decoupled engine's chain and from an
earlier step ("inputs originated from different decoupled models"), and a step may not mix the
engine's tensors with preprocessing's. So preprocessing, which assesses the patient's message,
leaves the triage JSON in a small file named after the request id, and postprocessing takes it
when it handles that request's first engine response. Both steps run on one host (one Triton
server); the directory is on tmpfs (/dev/shm) by default. The file holds the flags and the
notice only, never the patient's words.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

_TMPFS = Path("/dev/shm")
DEFAULT_DIR = (_TMPFS if _TMPFS.is_dir() else Path(tempfile.gettempdir())) / "wingpt-triage"


class TriageHandoff:
    """put() in preprocessing, take() once in postprocessing; files left by failed requests are swept."""

    def __init__(self, directory: str | Path, ttl_s: float = 600.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self._next_sweep = time.monotonic() + ttl_s

    def _path(self, request_id: str) -> Path:
        # Request ids are client-chosen text: hash them into a safe file name.
        return self.directory / hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest()

    def put(self, request_id: str, triage_json: str) -> None:
        """Leave the triage for `request_id` (no id: nothing to key it by, so nothing is left)."""
        if not request_id:
            return
        path = self._path(request_id)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(triage_json, encoding="utf-8")
        tmp.replace(path)  # atomic: postprocessing never reads half a file
        self._sweep()

    def take(self, request_id: str) -> str | None:
        """The triage left for `request_id`, once; None when there is none (or it was taken)."""
        if not request_id:
            return None
        path = self._path(request_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        return text

    def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.ttl_s
        cutoff = time.time() - self.ttl_s
        for path in self.directory.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
