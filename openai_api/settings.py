"""Typed endpoint settings: command-line flags, else environment variables, else defaults -> `OpenAISettings`.

The connection to Triton is the client library's `ClientConfig` (the same `WINGPT_*` variables as
`wingpt-chat` and the UI, and the UI's TLS flag names, which the Helm chart passes). Decoding defaults
and token budgets use the server's own variables (`WINGPT_MAX_TOKENS_DEFAULT`, `WINGPT_CONTEXT_WINDOW`,
`WINGPT_SYSTEM_PROMPT`, `MODEL_DIR`) so the endpoint counts usage for the prompt the server builds.
API keys are read from a file only (a mounted Kubernetes Secret), never from a flag `ps` would show.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from wingpt_client import ClientConfig
from wingpt_client.config import add_connection_flags, config_from_flags

from wingpt.settings import ServerSettings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_BOOL_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class OpenAISettings:
    """What `python -m openai_api` runs. Every field but `client` has a flag and an environment variable."""

    client: ClientConfig = field(default_factory=ClientConfig)
    host: str = field(default="127.0.0.1", metadata={
        "flag": "--host", "env": "WINGPT_OPENAI_HOST",
        "help": "address the endpoint listens on (0.0.0.0 in a container; needs API keys off loopback)"})
    port: int = field(default=9000, metadata={
        "flag": "--port", "env": "WINGPT_OPENAI_PORT", "help": "HTTP port of the endpoint (/v1 under it)"})
    model_name: str = field(default="wingpt2", metadata={
        "flag": "--model-name", "env": "WINGPT_OPENAI_MODEL_NAME",
        "help": "the model id clients send and GET /v1/models lists"})
    api_keys_file: str = field(default="", metadata={
        "flag": "--api-keys-file", "env": "WINGPT_OPENAI_API_KEYS_FILE",
        "help": "file of accepted bearer keys, one per line (# comments); re-read when it changes; "
                "empty = no keys (allowed on loopback only)"})
    allow_no_keys: bool = field(default=False, metadata={
        "flag": "--allow-no-keys", "env": "WINGPT_OPENAI_ALLOW_NO_KEYS",
        "help": "serve without API keys on a non-loopback address (logged as a warning at every start); "
                "otherwise such a start is refused"})
    triage_notice: bool = field(default=True, metadata={
        "flag": "--triage-notice", "env": "WINGPT_OPENAI_TRIAGE_NOTICE",
        "help": "1: a flagged message's urgent-care notice comes first in the answer's content; 0: only in "
                "the `triage` field and X-Triage-Level header"})
    max_tokens_default: int = field(default=ServerSettings.max_tokens_default, metadata={
        "flag": "--max-tokens", "env": "WINGPT_MAX_TOKENS_DEFAULT",
        "help": "max_tokens when a request sends none (same variable as the server's default)"})
    context_window: int = field(default=ServerSettings.context_window, metadata={
        "flag": "--context-window", "env": "WINGPT_CONTEXT_WINDOW",
        "help": "the server's context window, for counting the prompt tokens it keeps (same variable)"})
    system_prompt: str = field(default="", metadata={
        "flag": "--system-prompt", "env": "WINGPT_SYSTEM_PROMPT",
        "help": "the server's preamble, for counting prompt tokens (same variable as the server's)"})
    tokenizer_dir: str = field(default="", metadata={
        "flag": "--tokenizer-dir", "env": "MODEL_DIR",
        "help": "directory with qwen.tiktoken for usage counts; empty = the copy the dashscope wheel ships"})
    retry_after_s: int = field(default=2, metadata={
        "flag": "--retry-after", "env": "WINGPT_OPENAI_RETRY_AFTER_S",
        "help": "Retry-After seconds sent with 429 (overloaded) and 503 (unavailable)"})
    log_level: str = field(default="INFO", metadata={
        "flag": "--log-level", "env": "WINGPT_OPENAI_LOG_LEVEL",
        "help": "DEBUG, INFO, WARNING or ERROR; the endpoint's log lines never carry patient text"})

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"--port / WINGPT_OPENAI_PORT must be 1..65535, got {self.port}")
        if not self.model_name.strip():
            raise ValueError("--model-name / WINGPT_OPENAI_MODEL_NAME must not be empty")
        if not 0 < self.max_tokens_default < self.context_window:
            raise ValueError(f"need 0 < max tokens ({self.max_tokens_default}) < context window "
                             f"({self.context_window})")
        if self.retry_after_s < 0:
            raise ValueError(f"--retry-after must be >= 0, got {self.retry_after_s}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if not self.api_keys_file and not self.loopback and not self.allow_no_keys:
            raise ValueError(
                f"refusing to serve without API keys on {self.host}: set --api-keys-file / "
                "WINGPT_OPENAI_API_KEYS_FILE (a mounted Secret), bind 127.0.0.1, or pass --allow-no-keys / "
                "WINGPT_OPENAI_ALLOW_NO_KEYS=1 if something else (a NetworkPolicy, a gateway) guards it")

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (the one place an endpoint without keys is allowed)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> OpenAISettings:
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
            values[f.name] = _convert(f, raw)
        if isinstance(values.get("log_level"), str):
            values["log_level"] = str(values["log_level"]).upper()
        return cls(**values)  # type: ignore[arg-type]


def _convert(f, raw: object) -> object:
    kind = str(f.type)
    if kind == "bool":
        return raw if isinstance(raw, bool) else str(raw).strip().lower() in _BOOL_TRUE
    try:
        return {"int": int, "float": float}.get(kind, str)(raw)
    except ValueError:
        raise ValueError(f"{f.metadata['flag']} / {f.metadata['env']}: not a valid {kind}: {raw!r}") from None


def _own_fields() -> list:
    return [f for f in fields(OpenAISettings) if "flag" in f.metadata]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m openai_api", description="OpenAI-compatible chat completions "
                                     "in front of the Triton deployment. Flags override the environment variables.")
    add_connection_flags(parser, "Triton connection (the client library's WINGPT_* variables)", url_flag="--triton-url",
                         model_flag="--triton-model", retries=False)
    own = parser.add_argument_group("endpoint")
    for f in _own_fields():
        text = f"{f.metadata['help']} (env {f.metadata['env']}; default {f.default!r})"
        if str(f.type) == "bool":
            own.add_argument(f.metadata["flag"], dest=f.name, default=None, help=text,
                             type=lambda v: v.strip().lower() in _BOOL_TRUE, nargs="?", const=True)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            own.add_argument(f.metadata["flag"], dest=f.name, type=kind, help=text)
    return parser


def settings_table() -> list[tuple[str, str, str, str]]:
    """(flag, env var, default, help) rows: the README's configuration table lists these."""
    return [(f.metadata["flag"], f.metadata["env"], str(f.default), f.metadata["help"]) for f in _own_fields()]
