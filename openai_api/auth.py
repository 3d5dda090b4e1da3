"""Bearer API keys from a file (a Kubernetes Secret mounted as a file), re-read when it changes.

A Secret's mounted files are swapped atomically by the kubelet when the Secret is edited, so a key can
be added or revoked without restarting the endpoint: the file's identity (inode, size, mtime) is checked
on each request and the list re-read when it differs. A file that cannot be read keeps the previous list
(and is logged); one that has no keys at all accepts nothing.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading

LOG = logging.getLogger("openai_api")


def parse_keys(text: str) -> tuple[str, ...]:
    """One key per line; blank lines and `#` comments are skipped."""
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


class KeyFile:
    """The accepted keys; `check(header)` takes the raw Authorization header."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: tuple[bytes, ...] = ()
        self._load()
        if not self._keys:
            LOG.warning("API key file %s holds no keys: every request will be refused with 401", path)

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == self._stamp:
                return
            with open(self.path, encoding="utf-8") as f:
                keys = parse_keys(f.read())
        except OSError as exc:
            if self._stamp is None:
                raise
            LOG.error("API key file %s cannot be read (%s); keeping the previous keys", self.path, exc.strerror)
            return
        with self._lock:
            self._stamp, self._keys = stamp, tuple(k.encode() for k in keys)
        LOG.info("API keys loaded from %s: %d key(s)", self.path, len(keys))

    def check(self, authorization: str | None) -> bool:
        self._load()
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        given = key.strip().encode()
        # Compare against every key, so the time taken does not tell which prefix matched.
        return any([hmac.compare_digest(given, k) for k in self._keys])
