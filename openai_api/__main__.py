"""`python -m openai_api [--triton-url host:port] [--host 127.0.0.1] [--port 9000] ...` (see openai_api/settings.py)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from openai_api.settings import OpenAISettings

# uvicorn's own SIGTERM handling stops accepting connections and lets running answers finish, up to this long.
GRACEFUL_SHUTDOWN_S = 30


def main(argv: list[str] | None = None) -> int:
    try:
        settings = OpenAISettings.from_args(sys.argv[1:] if argv is None else argv)
    except (ValueError, OSError) as exc:
        print(f"python -m openai_api: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("openai_api")
    from openai_api.app import build_app

    try:
        app = build_app(settings)
    except OSError as exc:
        print(f"python -m openai_api: {exc}", file=sys.stderr)
        return 2
    if not settings.api_keys_file and not settings.loopback:
        log.warning("NO API KEYS: anyone who can reach %s:%d can use the model (--allow-no-keys)",
                    settings.host, settings.port)
    log.info("OpenAI-compatible API on http://%s:%d/v1 (model %s), Triton %s (%s), keys %s, triage notice %s",
             settings.host, settings.port, settings.model_name, settings.client.url,
             "TLS" if settings.client.ssl else "plaintext", settings.api_keys_file or "none",
             "on" if settings.triage_notice else "off")
    # uvicorn's access log would print every request line; it carries no patient text but is noise at scale.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
