"""`python -m serving {serve,render}`: flags override the environment (see wingpt/settings.py)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from openai_api.settings import OpenAISettings
from serving.launch import Sidecar, Supervisor
from serving.render import RenderError, parameters_for, render_repository
from wingpt.engine.embedded import WARNING, ensure_embedded_model, is_embedded
from wingpt.settings import TARGETS, ServerSettings


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("command", choices=("serve", "render"))
    parser.add_argument("--target", choices=TARGETS, help="overrides WINGPT_TARGET")
    parser.add_argument("--model-dir", help="overrides MODEL_DIR")
    parser.add_argument("--out", help="rendered repository directory (overrides WINGPT_REPO_DIR)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="template parameter, e.g. engine_dir=/engines/x (repeatable)")
    parser.add_argument("--openai-port", type=int,
                        help="OpenAI-compatible endpoint port (overrides WINGPT_OPENAI_PORT)")
    parser.add_argument("--openai-host", help="address it binds to (overrides WINGPT_OPENAI_HOST)")
    parser.add_argument("--no-openai", action="store_const", const=0, dest="openai",
                        help="do not run the OpenAI-compatible endpoint (WINGPT_OPENAI=0)")
    return parser.parse_args(argv)


def openai_sidecar(settings: ServerSettings) -> Sidecar:
    """`python -m openai_api` for this server; its settings are checked here, so a bad one stops `serve` at once.

    Its other settings (API keys file, model name, triage notice, ...) come from the environment it inherits.
    """
    triton = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    argv = ["--triton-url", f"{triton}:{settings.grpc_port}", "--host", settings.openai_host,
            "--port", str(settings.openai_port), "--max-tokens", str(settings.max_tokens_default),
            "--context-window", str(settings.context_window)]
    if settings.model_dir:
        argv += ["--tokenizer-dir", settings.model_dir]
    endpoint = OpenAISettings.from_args(argv)
    local = "127.0.0.1" if endpoint.host in ("0.0.0.0", "::", "") else endpoint.host
    return Sidecar("the OpenAI-compatible endpoint", [sys.executable, "-m", "openai_api", *argv],
                   f"http://{local}:{endpoint.port}/health/live")


def render_from_settings(settings: ServerSettings, extra: dict[str, str]) -> Path:
    """Resolve the model (generating the embedded default if none is given) and render the repository."""
    model_dir = settings.model_dir or str(ensure_embedded_model(settings.cache_dir))
    params = parameters_for(settings, str(Path(model_dir).resolve()), is_embedded(model_dir))
    params.update(extra)
    return render_repository(settings.target, Path(settings.repo_dir).resolve(), params)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        extra = dict(item.split("=", 1) for item in args.set)
    except ValueError:
        print("--set takes KEY=VALUE", file=sys.stderr)
        return 2
    try:
        settings = ServerSettings.from_env(target=args.target, model_dir=args.model_dir, repo_dir=args.out,
                                           openai=args.openai, openai_port=args.openai_port,
                                           openai_host=args.openai_host)
        sidecar = openai_sidecar(settings) if args.command == "serve" and settings.openai else None
        repo = render_from_settings(settings, extra)
    except (ValueError, RenderError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {settings.target} model repository: {repo}")
    if args.command == "render":
        return 0
    if not settings.model_dir:
        print(f"NOTE: {WARNING}")
    # Every Python-backend model (the orchestrator, torch_llm) runs in its own stub process, which the
    # supervisor watches; the TensorRT-LLM backend runs inside tritonserver, so the server's death covers it.
    supervisor = Supervisor(repo, settings, sidecar=sidecar)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.terminate())
    try:
        supervisor.start()
        openai = f"  OpenAI http://{settings.openai_host}:{settings.openai_port}/v1" if sidecar else ""
        print(f"ready: gRPC {settings.host}:{settings.grpc_port}  HTTP {settings.host}:{settings.http_port}  "
              f"metrics {settings.host}:{settings.metrics_port}{openai}  (Ctrl-C stops)", flush=True)
        return supervisor.run()
    except KeyboardInterrupt:
        supervisor.terminate()
        return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
