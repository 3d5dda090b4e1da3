"""Typed UI settings: command-line flags, else environment variables, else defaults -> `UiSettings`.

The connection to Triton is the client library's `ClientConfig` (same `WINGPT_*` variables as
`wingpt-chat`); the flag names are the ones the Helm chart passes (`--triton-url`, `--ssl`,
`--root-certificates`, `--private-key`, `--certificate-chain`). The token is read from
`WINGPT_TOKEN` or `--token-file` only, never from the command line, where `ps` would show it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from wingpt_client import ClientConfig
from wingpt_client.config import add_connection_flags, config_from_flags

from wingpt.settings import ServerSettings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class UiSettings:
    """What `python -m ui` runs. Every field but `client` has a flag and an environment variable."""

    client: ClientConfig = field(default_factory=ClientConfig)
    host: str = field(default="127.0.0.1", metadata={
        "flag": "--host", "env": "GRADIO_SERVER_NAME", "help": "address the UI listens on (0.0.0.0 in a container)"})
    port: int = field(default=7860, metadata={
        "flag": "--port", "env": "GRADIO_SERVER_PORT", "help": "HTTP port of the UI"})
    concurrency: int = field(default=64, metadata={
        "flag": "--concurrency", "env": "WINGPT_UI_CONCURRENCY",
        "help": "answers streamed at once by this UI process; more patients wait in the UI's queue "
                "(Gradio's own default is 1: everyone queued behind one patient)"})
    queue_size: int = field(default=512, metadata={
        "flag": "--queue-size", "env": "WINGPT_UI_QUEUE_SIZE",
        "help": "patients who may wait beyond --concurrency; Gradio refuses more with 'queue is full'"})
    max_tokens_default: int = field(default=ServerSettings.max_tokens_default, metadata={
        "flag": "--max-tokens", "env": "WINGPT_MAX_TOKENS_DEFAULT",
        "help": "the settings panel's initial max tokens (same variable as the server's default)"})
    max_tokens_limit: int = field(default=ServerSettings.max_tokens_limit, metadata={
        "flag": "--max-tokens-limit", "env": "WINGPT_MAX_TOKENS_LIMIT",
        "help": "the max tokens slider's upper end (same variable as the server's limit)"})
    status_interval_s: float = field(default=5.0, metadata={
        "flag": "--status-interval", "env": "WINGPT_UI_STATUS_INTERVAL_S",
        "help": "seconds between the status line's health checks (one check per UI process, shared by all pages)"})
    log_level: str = field(default="INFO", metadata={
        "flag": "--log-level", "env": "WINGPT_UI_LOG_LEVEL",
        "help": "DEBUG, INFO, WARNING or ERROR; the UI's own log lines never carry patient text"})

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port}")
        if self.concurrency < 1 or self.queue_size < 0:
            raise ValueError("concurrency must be >= 1 and queue size >= 0")
        if not 0 < self.max_tokens_default <= self.max_tokens_limit:
            raise ValueError(f"need 0 < max tokens ({self.max_tokens_default}) <= max tokens limit "
                             f"({self.max_tokens_limit})")
        if self.status_interval_s <= 0:
            raise ValueError(f"status interval must be > 0 seconds, got {self.status_interval_s}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> UiSettings:
        """Flags win over the environment; a bad value raises ValueError naming it (argparse exits on bad flags)."""
        env = os.environ if environ is None else environ
        args = _parser().parse_args(argv)
        client = config_from_flags(args, env)
        values: dict[str, object] = {"client": client}
        for f in _own_fields():
            raw = getattr(args, f.name)
            if raw is None:
                raw = env.get(f.metadata["env"]) or None
            if raw is None:
                continue
            try:
                values[f.name] = {"int": int, "float": float}.get(str(f.type), str)(raw)
            except ValueError:
                raise ValueError(f"{f.metadata['flag']} / {f.metadata['env']}: not a valid {f.type}: {raw!r}") from None
        if isinstance(values.get("log_level"), str):
            values["log_level"] = str(values["log_level"]).upper()
        return cls(**values)  # type: ignore[arg-type]


def _own_fields() -> list:
    return [f for f in fields(UiSettings) if "flag" in f.metadata]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ui", description="WiNGPT2 triage chat (Gradio), a client of "
                                     "the Triton deployment. Flags override the environment variables named below.")
    add_connection_flags(parser, "Triton connection (the client library's WINGPT_* variables)", url_flag="--triton-url",
                         model_flag="--model", retries=False)
    ui = parser.add_argument_group("UI")
    for f in _own_fields():
        kind = {"int": int, "float": float}.get(str(f.type), str)
        ui.add_argument(f.metadata["flag"], dest=f.name, type=kind,
                        help=f"{f.metadata['help']} (env {f.metadata['env']}; default {f.default})")
    return parser


def settings_table() -> list[tuple[str, str, str, str]]:
    """(flag, env var, default, help) rows: docs/ui.md's configuration table is this list."""
    return [(f.metadata["flag"], f.metadata["env"], str(f.default), f.metadata["help"]) for f in _own_fields()]
