"""`python -m serving {serve,render}`: flags override the environment (see wingpt/settings.py)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from serving.launch import Supervisor
from serving.render import ENGINE_MODEL, RenderError, parameters_for, render_repository
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
    return parser.parse_args(argv)


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
        settings = ServerSettings.from_env(target=args.target, model_dir=args.model_dir, repo_dir=args.out)
        repo = render_from_settings(settings, extra)
    except (ValueError, RenderError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {settings.target} model repository: {repo}")
    if args.command == "render":
        return 0
    if not settings.model_dir:
        print(f"NOTE: {WARNING}")
    # The Python-backend engine runs in its own stub process, which the supervisor watches; the
    # TensorRT-LLM backend runs inside tritonserver, so the server's own death covers it.
    engine = ENGINE_MODEL[settings.target]
    supervisor = Supervisor(repo, settings, engine if engine == "torch_llm" else None)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.terminate())
    try:
        supervisor.start()
        print(f"ready: gRPC {settings.host}:{settings.grpc_port}  HTTP {settings.host}:{settings.http_port}  "
              f"metrics {settings.host}:{settings.metrics_port}  (Ctrl-C stops)", flush=True)
        return supervisor.run()
    except KeyboardInterrupt:
        supervisor.terminate()
        return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
