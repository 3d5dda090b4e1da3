"""The hospital's first check after `make engine`, inside NVIDIA's container on the GPU host.

    docker run --gpus all --shm-size=2g -v $PWD:/work -v /models:/models -w /work \\
        nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3 \\
        python3 -m build_engine.first_contact --repo build/engines/<engine>/model_repository \\
            --model-dir /models/WiNGPT2-7B-Chat

Starts the container's own `tritonserver` on the **rendered** repository (so a config the pinned
backend rejects fails here, not in production), waits until it is ready, then through the public
model `ensemble` (the project's client, gRPC): a streamed Chinese chat arrives intact; an emergency
message carries the triage notice; a cancelled stream frees its engine slot (the
`nv_trt_llm_request_metrics{request_type="active"}` gauge returns to 0); a flood beyond
max_batch_size + max_queue_size is answered as overload; with --model-dir, greedy token agreement
with the bf16 Hugging Face model on the seed's five questions. Prints one pass/fail table; exit 1 if
any check fails. `--url` checks a server that is already running instead of starting one.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client"))

from wingpt_client import AsyncWingptClient, OverloadedError, WingptClient, WingptClientError

CHAT = "你好，请用两三句话介绍一下高血压患者日常需要注意什么。"
EMERGENCY = "我胸口剧痛，一直出冷汗，左臂发麻"
REPLACEMENT_CHAR = "\ufffd"
_ACTIVE = re.compile(r'^nv_trt_llm_request_metrics\{[^}]*request_type="active"[^}]*\}\s+([0-9.eE+-]+)', re.M)


@dataclass(frozen=True)
class Result:
    check: str
    ok: bool
    detail: str


def table(results: list[Result]) -> str:
    """The pass/fail table the hospital reads, last line the verdict."""
    width = max([len(r.check) for r in results] + [5])
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{r.check:<{width}}  {'PASS' if r.ok else 'FAIL':<6}  {r.detail}" for r in results]
    failed = [r.check for r in results if not r.ok]
    lines.append("ALL CHECKS PASSED" if not failed else f"FAILED: {', '.join(failed)}")
    return "\n".join(lines)


def active_requests(metrics_url: str) -> float:
    """Sum of the engine's active-request gauges (the same family for tensorrt_llm and torch_llm)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode("utf-8")
    values = [float(v) for v in _ACTIVE.findall(text)]
    if not values:
        raise RuntimeError(f"no nv_trt_llm_request_metrics active gauge at {metrics_url}")
    return sum(values)


def _run(name: str, check: Callable[[], str]) -> Result:
    try:
        return Result(name, True, check())
    except Exception as exc:
        return Result(name, False, f"{type(exc).__name__}: {exc}")


def check_chinese_stream(client: WingptClient) -> str:
    text = "".join(client.stream_chat(CHAT, max_tokens=48))
    if not text.strip():
        raise AssertionError("empty answer")
    if REPLACEMENT_CHAR in text:
        raise AssertionError(f"broken UTF-8 in the answer: {text!r}")
    if not re.search(r"[\u4e00-\u9fff]", text):
        raise AssertionError(f"no Chinese characters in the answer: {text!r}")
    return f"{len(text)} characters, intact: {text[:24]!r}..."


def check_triage(client: WingptClient) -> str:
    with client.stream_chat(EMERGENCY, max_tokens=8) as stream:
        next(stream, "")
        triage = stream.triage
        "".join(stream)
    if triage is None or triage.level != "emergency" or not triage.notice:
        raise AssertionError(f"expected an emergency triage notice, got {triage}")
    return f"emergency {', '.join(triage.categories)}: {triage.notice[:20]}..."


def check_cancel_frees_slot(client: WingptClient, metrics_url: str, timeout_s: float) -> str:
    stream = client.stream_chat(CHAT, max_tokens=200)  # within any server's max_tokens limit
    next(stream)
    stream.close()
    deadline = time.monotonic() + timeout_s
    while (left := active_requests(metrics_url)) > 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{left:g} engine requests still active {timeout_s:g} s after the cancel")
        time.sleep(0.2)
    return "the engine's active requests returned to 0 after closing a stream"


def check_overload(url: str, flood: int) -> str:
    async def ask() -> list[object]:
        async with AsyncWingptClient(url, retries=0) as client:
            calls = [client.chat(f"{CHAT} ({i})", max_tokens=32) for i in range(flood)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(ask())
    overloaded = [r for r in results if isinstance(r, OverloadedError)]
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, OverloadedError)]
    if others:
        raise AssertionError(f"{len(others)} requests failed other than as overload, e.g. {others[0]!r}")
    if not overloaded:
        raise AssertionError(f"none of {flood} concurrent requests was refused: raise --flood past the queue")
    return f"{len(overloaded)} of {flood} refused as overload ({str(overloaded[0])[:60]}), the rest answered"


def check_hf_agreement(client: WingptClient, model_dir: Path) -> str:
    """Per seed question, leading tokens the served greedy answer shares with the bf16 HF model's."""
    from build_engine.calibration_sources import SEED_QUESTIONS
    from build_engine.verify_in_container import (
        MAX_NEW_TOKENS,
        REPETITION_PENALTY,
        common_prefix,
        generate_hf,
        prompt_ids,
    )
    from wingpt.tokenizer import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    reference = generate_hf(model_dir, prompt_ids(model_dir), tok.end_id)
    shares = []
    for question, ref in zip(SEED_QUESTIONS, reference, strict=True):
        served = client.chat(question, max_tokens=MAX_NEW_TOKENS, temperature=0, repetition_penalty=REPETITION_PENALTY)
        shares.append(f"{common_prefix(tok.encode(served), ref)}/{len(ref)}")
    return "shared leading tokens per question: " + " ".join(shares)


def run_checks(url: str, metrics_url: str, flood: int, model_dir: Path | None, timeout_s: float) -> list[Result]:
    with WingptClient(url) as client:
        results = [_run("server ready", lambda: _ready(client))]
        if not results[0].ok:
            return results
        results += [
            _run("chinese chat streams intact", lambda: check_chinese_stream(client)),
            _run("emergency triage notice", lambda: check_triage(client)),
            _run("cancel frees the engine slot", lambda: check_cancel_frees_slot(client, metrics_url, timeout_s)),
            _run("overload answered as overload", lambda: check_overload(url, flood)),
        ]
        if model_dir is not None:
            results.append(_run("token agreement with HF bf16", lambda: check_hf_agreement(client, model_dir)))
    return results


def _ready(client: WingptClient) -> str:
    info = client.model_info()
    if info.embedded_default:
        raise AssertionError("the repository serves the embedded random-weight model, not the engine")
    return f"{info.name} on Triton {info.server_version}: {info.note}"


def start_tritonserver(binary: str, repo: Path, ports: tuple[int, int, int], log: Path) -> subprocess.Popen:
    http, grpc, metrics = ports
    argv = [binary, f"--model-repository={repo}", f"--http-port={http}", f"--grpc-port={grpc}",
            f"--metrics-port={metrics}", "--log-verbose=0"]
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with WingptClient(url, retries=0) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {process.returncode} while loading")
            try:
                if client.health(timeout_s=2).ok:
                    return
            except WingptClientError:
                pass
            time.sleep(1)
    raise RuntimeError(f"the server at {url} was not ready within {timeout_s:g} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m build_engine.first_contact", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo", type=Path, help="the rendered model repository `make engine` wrote")
    where.add_argument("--url", help="host:grpc_port of a server already running (then --metrics-url too)")
    p.add_argument("--metrics-url", help="its metrics endpoint (default http://127.0.0.1:<metrics port>/metrics)")
    p.add_argument("--model-dir", type=Path, help="WiNGPT2 bf16 checkpoint: also compare tokens with it")
    p.add_argument("--tritonserver", default="tritonserver", help="server binary (the container's)")
    p.add_argument("--ports", type=int, nargs=3, default=(18000, 18001, 18002), metavar=("HTTP", "GRPC", "METRICS"))
    p.add_argument("--flood", type=int, default=0,
                   help="concurrent requests for the overload check (default 2 x (max_batch_size + max_queue_size))")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the engine to load")
    args = p.parse_args(argv)
    if args.url and not args.metrics_url:
        p.error("--url needs --metrics-url")
    if args.repo is not None and not (args.repo / "ensemble").is_dir():
        p.error(f"{args.repo} is not a rendered model repository (no ensemble/): run `make engine` first")
    if args.flood < 0:
        p.error("--flood must be >= 0")
    return args


def default_flood(repo: Path | None) -> int:
    """Twice what the engine takes at once (running + queued), read from the rendered engine config."""
    if repo is None:
        return 64
    for engine in ("tensorrt_llm", "torch_llm"):
        config = repo / engine / "config.pbtxt"
        if config.is_file():
            text = config.read_text(encoding="utf-8")
            batch = re.search(r"^max_batch_size:\s*(\d+)", text, re.M)
            queue = re.search(r"max_queue_size:\s*(\d+)", text) or re.search(
                r'"max_queue_size"\s*value:\s*\{\s*string_value:\s*"(\d+)"', text)
            if batch and queue:
                return 2 * (int(batch.group(1)) + int(queue.group(1)))
    return 64


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flood = args.flood or default_flood(args.repo)
    process = None
    if args.url:
        url, metrics_url = args.url, args.metrics_url
    else:
        if shutil.which(args.tritonserver) is None:
            print(f"first_contact: {args.tritonserver} not found: run inside the pinned Triton container",
                  file=sys.stderr)
            return 2
        http, grpc, metrics = args.ports
        url, metrics_url = f"127.0.0.1:{grpc}", args.metrics_url or f"http://127.0.0.1:{metrics}/metrics"
        log = args.repo.parent / "first_contact_tritonserver.log"
        process = start_tritonserver(args.tritonserver, args.repo.resolve(), (http, grpc, metrics), log)
        print(f"tritonserver starting on the rendered repository {args.repo} (log: {log})", flush=True)
    try:
        try:
            wait_ready(url, process, args.timeout)
        except RuntimeError as exc:
            results = [Result("server ready", False, str(exc))]
        else:
            results = run_checks(url, metrics_url, flood, args.model_dir, timeout_s=60)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
    print(table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
