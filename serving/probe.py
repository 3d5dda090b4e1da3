"""`python -m serving.probe ready|live`: the Kubernetes probe of a Triton container, reflecting its models' processes.

Triton 2.51 keeps answering /v2/health/ready and /v2/health/live with 200 after a Python-backend model's stub
process has died (measured: SIGKILL of the torch_llm stub, all four endpoints 200 for as long as we looked),
while every request to that model fails. So the probe also checks that every Python-backend model of the
repository still has its stub process under tritonserver (the container's PID 1). A broken engine needs no probe:
it stops its tritonserver (wingpt/engine/faults.py), whose ports close at once and whose exit ends the container.

Exit 0 when healthy; 1 with one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

from serving.launch import python_models, stub_pids

ENDPOINTS = {"ready": "/v2/health/ready", "live": "/v2/health/live"}


def problem(kind: str, repository: Path, server_pid: int, http_port: int) -> str | None:
    """What makes this replica unfit for `kind` (ready: take traffic; live: keep running), or None."""
    url = f"http://127.0.0.1:{http_port}{ENDPOINTS[kind]}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        return f"{url}: {exc}"
    if status != 200:
        return f"{url} answered {status}"
    dead = [model for model in python_models(repository) if not stub_pids(server_pid, model)]
    if dead:
        return f"the process of model(s) {', '.join(dead)} is gone (Triton still says {kind}); restart the server"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(ENDPOINTS))
    parser.add_argument("--repository", default="/model-repository", help="the rendered model repository")
    parser.add_argument("--pid", type=int, default=1, help="tritonserver's process id (1: the container's)")
    parser.add_argument("--http-port", type=int, default=8000)
    args = parser.parse_args(argv)
    found = problem(args.kind, Path(args.repository), args.pid, args.http_port)
    if found:
        print(f"not {args.kind}: {found}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
