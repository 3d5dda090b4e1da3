"""Connection settings: keyword arguments or environment -> `ClientConfig` -> one gRPC channel.

The names follow tritonclient (`ssl`, `root_certificates`, `private_key`, `certificate_chain`) so a
service moving from raw tritonclient keeps its configuration; the CLI and examples read the same
settings from `WINGPT_*` environment variables.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import grpc

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_MODEL = "ensemble"
DEFAULT_TOKEN_KEY = "wingpt-token"
DEFAULT_TIMEOUT_S = 120.0
RESTRICTED_HEADER_PREFIX = "triton-grpc-protocol-"

# A PEM file path, or the PEM bytes themselves (as read from a secret store).
PemSource = str | os.PathLike[str] | bytes

_ENV = {
    "url": "WINGPT_URL",
    "model": "WINGPT_MODEL",
    "ssl": "WINGPT_SSL",
    "root_certificates": "WINGPT_ROOT_CERTIFICATES",
    "private_key": "WINGPT_PRIVATE_KEY",
    "certificate_chain": "WINGPT_CERTIFICATE_CHAIN",
    "token": "WINGPT_TOKEN",
    "token_key": "WINGPT_TOKEN_KEY",
    "timeout_s": "WINGPT_TIMEOUT_S",
    "retries": "WINGPT_RETRIES",
}

# gRPC's default reconnect backoff grows to 120 s, so a client would keep failing fast for up to two
# minutes after Triton restarts; 5 s keeps recovery quick without hammering a down server.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


@dataclass(frozen=True)
class ClientConfig:
    """Everything needed to reach the WiNGPT2 ensemble; validated on construction.

    `token`/`token_key`: Triton's restricted protocols (`--grpc-restricted-protocol=<groups>:<key>=<value>`)
    expect the header `triton-grpc-protocol-<key>: <value>`; `token_key` is `<key>`.
    `timeout_s` is the default deadline of each call (None: none); `retries` how often a call that
    could not reach the server is tried again, with exponential backoff from `retry_backoff_s`.
    """

    url: str = DEFAULT_URL
    model: str = DEFAULT_MODEL
    ssl: bool = False
    root_certificates: PemSource | None = None
    private_key: PemSource | None = None
    certificate_chain: PemSource | None = None
    token: str | None = None
    token_key: str = DEFAULT_TOKEN_KEY
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    retries: int = 2
    retry_backoff_s: float = 0.25

    def __post_init__(self) -> None:
        if self.url.startswith("grpcs://"):
            object.__setattr__(self, "ssl", True)
        target = self.target
        if not target or ":" not in target:
            raise ValueError(f"url must be host:port (optionally grpc:// or grpcs://), got {self.url!r}")
        if not self.ssl and any((self.root_certificates, self.private_key, self.certificate_chain)):
            raise ValueError("root_certificates, private_key and certificate_chain need ssl=True")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("mutual TLS needs both private_key and certificate_chain")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {self.timeout_s}")
        if self.retries < 0 or self.retry_backoff_s < 0:
            raise ValueError("retries and retry_backoff_s must be >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ClientConfig:
        """Settings from `WINGPT_*` variables; keyword overrides that are not None win."""
        env = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for name, var in _ENV.items():
            raw = env.get(var, "")
            if raw == "":
                continue
            kind = str(types[name])
            if kind == "bool":
                values[name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif kind == "int":
                values[name] = int(raw)
            elif "float" in kind:
                values[name] = float(raw)
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def target(self) -> str:
        """The gRPC target (`host:port`), without any scheme."""
        return self.url.split("://", 1)[1] if "://" in self.url else self.url

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Headers sent with every call (gRPC metadata keys must be lower case)."""
        items = {k.lower(): v for k, v in self.headers.items()}
        if self.token is not None:
            items[RESTRICTED_HEADER_PREFIX + self.token_key.lower()] = self.token
        return tuple(items.items())

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (server verified against `root_certificates`, or the system roots when
        None; the client certificate is presented for mutual TLS); None for plaintext."""
        if not self.ssl:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates),
            private_key=_pem(self.private_key),
            certificate_chain=_pem(self.certificate_chain),
        )


def _pem(source: PemSource | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def add_connection_flags(parser: argparse.ArgumentParser, title: str = "connection", *, url_flag: str = "--url",
                         model_flag: str = "--model", retries: bool = True) -> None:
    """The connection flags of every program built on this client (the CLI, the UI, the OpenAI endpoint), read
    back by `config_from_flags`; a program that has a model or URL of its own names these `--triton-*`."""
    conn = parser.add_argument_group(title)
    conn.add_argument(url_flag, dest="url", help="Triton gRPC host:port; grpcs://host:port turns TLS on "
                                                 f"(env WINGPT_URL; default {DEFAULT_URL})")
    conn.add_argument(model_flag, dest="model", help=f"Triton model name (env WINGPT_MODEL; default {DEFAULT_MODEL})")
    conn.add_argument("--timeout", type=float, metavar="S",
                      help=f"deadline of one answer, seconds (env WINGPT_TIMEOUT_S; default {DEFAULT_TIMEOUT_S:g})")
    if retries:
        conn.add_argument("--retries", type=int, help="retries when the server cannot be reached (env WINGPT_RETRIES)")
    conn.add_argument("--ssl", action="store_true", default=None, help="TLS to Triton (env WINGPT_SSL)")
    conn.add_argument("--root-certificates", metavar="PEM",
                      help="CA that signed Triton's certificate (env WINGPT_ROOT_CERTIFICATES)")
    conn.add_argument("--private-key", metavar="PEM", help="client key, mutual TLS (env WINGPT_PRIVATE_KEY)")
    conn.add_argument("--certificate-chain", metavar="PEM",
                      help="client certificate chain, mutual TLS (env WINGPT_CERTIFICATE_CHAIN)")
    conn.add_argument("--token-key", help="restricted-protocol key: header triton-grpc-protocol-<key> "
                                          f"(env WINGPT_TOKEN_KEY; default {DEFAULT_TOKEN_KEY})")
    conn.add_argument("--token-file", metavar="PATH", help="file holding the restricted-protocol token (else env "
                                                           "WINGPT_TOKEN; never a flag, ps would show it)")


def config_from_flags(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ClientConfig:
    """`ClientConfig` from `add_connection_flags`' flags, else the `WINGPT_*` environment, else the defaults."""
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    return ClientConfig.from_env(
        environ, url=args.url, model=args.model, timeout_s=args.timeout, retries=getattr(args, "retries", None),
        ssl=args.ssl, root_certificates=args.root_certificates, private_key=args.private_key,
        certificate_chain=args.certificate_chain, token_key=args.token_key, token=token,
    )
