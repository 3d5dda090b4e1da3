"""Reloading the rules file while the server runs, so a hospital's edit needs no restart."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from wingpt.safety.assess import TriageAssessor
from wingpt.safety.rules import DEFAULT_RULES, RulesError, load_rules

log = logging.getLogger(__name__)


class RulesWatcher:
    """Gives the assessor for the newest valid rules file.

    The file's mtime and size are checked at most every `check_every_s` seconds. An edit that
    fails validation is logged and kept in `last_error`, and the previous rules stay in force:
    a typo in the rules file must never switch the safety layer off.
    """

    def __init__(self, path: str | Path | None = None, check_every_s: float = 1.0) -> None:
        self.path = Path(path) if path is not None else DEFAULT_RULES
        self.check_every_s = check_every_s
        self.last_error: RulesError | None = None
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._assessor = TriageAssessor(load_rules(self.path))  # an invalid file at start-up is fatal
        self._next_check = time.monotonic() + check_every_s

    def assessor(self) -> TriageAssessor:
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check:
                    self._next_check = now + self.check_every_s
                    self._reload_if_changed()
        return self._assessor

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _reload_if_changed(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._assessor = TriageAssessor(load_rules(self.path))
            self.last_error = None
            log.info("reloaded triage rules from %s", self.path)
        except RulesError as exc:
            self.last_error = exc
            log.error("kept the previous triage rules: %s", exc)
