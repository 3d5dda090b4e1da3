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
        token = None
        if args.token_file:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        client = ClientConfig.from_env(
            env, url=args.triton_url, model=args.model, timeout_s=args.timeout, ssl=args.ssl,
            root_certificates=args.root_certificates, private_key=args.private_key,
            certificate_chain=args.certificate_chain, token_key=args.token_key, token=token,
        )
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
    conn = parser.add_argument_group("Triton connection (the client library's WINGPT_* variables)")
    conn.add_argument("--triton-url", help="Triton gRPC host:port; grpcs://host:port turns TLS on (env WINGPT_URL; "
                                           "default 127.0.0.1:8001)")
    conn.add_argument("--model", help="Triton model name (env WINGPT_MODEL; default ensemble)")
    conn.add_argument("--timeout", type=float, metavar="S",
                      help="deadline of one answer, seconds (env WINGPT_TIMEOUT_S; default 120)")
    conn.add_argument("--ssl", action="store_true", default=None, help="TLS to Triton (env WINGPT_SSL)")
    conn.add_argument("--root-certificates", metavar="PEM", help="CA that signed Triton's certificate "
                                                                 "(env WINGPT_ROOT_CERTIFICATES)")
    conn.add_argument("--private-key", metavar="PEM", help="client key, mutual TLS (env WINGPT_PRIVATE_KEY)")
    conn.add_argument("--certificate-chain", metavar="PEM",
                      help="client certificate, mutual TLS (env WINGPT_CERTIFICATE_CHAIN)")
    conn.add_argument("--token-key", help="restricted-protocol header key (env WINGPT_TOKEN_KEY)")
    conn.add_argument("--token-file", metavar="PATH", help="file holding the restricted-protocol token "
                                                           "(else env WINGPT_TOKEN)")
    ui = parser.add_argument_group("UI")
    for f in _own_fields():
        kind = {"int": int, "float": float}.get(str(f.type), str)
        ui.add_argument(f.metadata["flag"], dest=f.name, type=kind,
                        help=f"{f.metadata['help']} (env {f.metadata['env']}; default {f.default})")
    return parser


def settings_table() -> list[tuple[str, str, str, str]]:
    """(flag, env var, default, help) rows: docs/ui.md's configuration table is this list."""
    return [(f.metadata["flag"], f.metadata["env"], str(f.default), f.metadata["help"]) for f in _own_fields()]
