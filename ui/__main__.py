"""`python -m ui [--triton-url host:port] [--port 7860] ...`: flags, else environment (see ui/settings.py)."""

from __future__ import annotations

import logging
import os
import sys

from ui.settings import UiSettings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = UiSettings.from_args(sys.argv[1:] if argv is None else argv)
    except (ValueError, OSError) as exc:
        print(f"python -m ui: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request Gradio makes to itself at INFO; nothing there is worth an operator's attention.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Patient conversations stay in the hospital: no usage reporting or version checks to Gradio's servers.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from ui.app import build_app, launch  # gradio reads GRADIO_ANALYTICS_ENABLED when it is imported

    client = settings.client
    logging.getLogger("ui").info("UI on http://%s:%d, Triton %s (model %s, %s), concurrency %d, queue %d",
                                 settings.host, settings.port, client.url, client.model,
                                 "TLS" if client.ssl else "plaintext", settings.concurrency, settings.queue_size)
    launch(build_app(settings), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
