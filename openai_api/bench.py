"""What the OpenAI-compatible endpoint adds: the sweep's two targets, same workload, one run, side by side.

    python -m openai_api.bench [--concurrency 1,16] [--requests-per-level 32] [--max-tokens 64] [--out DIR]

Starts Triton (embedded default, loopback, free ports; WINGPT_MAX_BATCH_SIZE etc. from the environment)
and the endpoint in front of it, then for each concurrency level runs `loadtest.sweep`'s gRPC target
against Triton and its OpenAI target against the endpoint, alternating, so both see the same machine
state. Prints TTFT and TPOT (p50/p95) for each, the endpoint's added time, and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from loadtest.metrics import Slo, summarize_levels
from loadtest.servers import local_triton
from loadtest.sweep import SweepConfig, make_target, run_level
from loadtest.workloads import build_workload
from serving.launch import Sidecar, free_port

METRICS = ("median_ttft_ms", "p95_ttft_ms", "median_tpot_ms", "p95_tpot_ms", "median_itl_ms")


@contextlib.contextmanager
def local_endpoint(triton_url: str, work_dir: Path) -> Iterator[str]:
    port = free_port()
    sidecar = Sidecar("openai_api", [sys.executable, "-m", "openai_api", "--triton-url", triton_url, "--port",
                                     str(port), "--log-level", "WARNING"],
                      f"http://127.0.0.1:{port}/health/ready", work_dir / "openai_api.log")
    sidecar.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        sidecar.stop()


async def compare(triton_url: str, openai_url: str, args: argparse.Namespace) -> dict[str, dict[int, dict]]:
    prompts = build_workload(args.workload, args.prompt_tokens)
    configs = {
        "triton-grpc": SweepConfig("triton", triton_url, args.concurrency, requests_per_level=args.requests_per_level,
                                   max_tokens=args.max_tokens, ignore_eos=True, label="triton-grpc"),
        "openai-endpoint": SweepConfig("openai", openai_url, args.concurrency,
                                       requests_per_level=args.requests_per_level, max_tokens=args.max_tokens,
                                       ignore_eos=True, label="openai-endpoint"),
    }
    targets = {name: make_target(config) for name, config in configs.items()}
    slo = Slo()
    results: dict[str, dict[int, dict]] = {name: {} for name in configs}
    try:
        for target in targets.values():
            await target.check()
            await run_level(target, iter(prompts * 2), configs["triton-grpc"].generation(), 1, requests=2)  # warm
        for concurrency in args.concurrency:
            for name, target in targets.items():
                records = await run_level(target, _cycle(prompts), configs[name].generation(), concurrency,
                                          requests=args.requests_per_level)
                results[name].update(summarize_levels(records, slo))
                print(f"  {name} at {concurrency}: {len(records)} requests, "
                      f"{results[name][concurrency]['failed']} failed", file=sys.stderr)
    finally:
        for target in targets.values():
            await target.aclose()
    return results


def _cycle(prompts: Sequence) -> Iterator:
    while True:
        yield from prompts


def table(results: dict[str, dict[int, dict]]) -> str:
    triton, endpoint = results["triton-grpc"], results["openai-endpoint"]
    lines = [f"{'streams':>7} {'target':>16} {'TTFT p50':>9} {'p95':>8} {'TPOT p50':>9} {'p95':>7} {'ITL p50':>8} "
             f"{'failed':>6}   (ms)"]
    for c in triton:
        for name, s in (("triton-grpc", triton[c]), ("openai-endpoint", endpoint[c])):
            lines.append(f"{c:>7} {name:>16} " + " ".join(f"{_f(s[m]):>{w}}" for m, w in zip(
                METRICS, (9, 8, 9, 7, 8), strict=True)) + f" {s['failed']:>6}")
        lines.append(f"{c:>7} {'added':>16} " + " ".join(f"{_d(endpoint[c][m], triton[c][m]):>{w}}" for m, w in zip(
            METRICS, (9, 8, 9, 7, 8), strict=True)))
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _d(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a - b:+.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m openai_api.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=lambda t: tuple(int(x) for x in t.split(",")), default=(1, 16))
    p.add_argument("--requests-per-level", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=0)
    p.add_argument("--workload", default="seed5")
    p.add_argument("--out", default="build/openai-bench")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp, local_triton(Path(tmp)) as triton_url, \
            local_endpoint(triton_url, out) as openai_url:
        results = asyncio.run(compare(triton_url, openai_url, args))
    print(table(results))
    summary = {"bench": "openai_api.bench", "config": {k: v for k, v in vars(args).items()},
               "machine": {"node": platform.node(), "python": platform.python_version(), "arch": platform.machine(),
                           "processor": platform.processor()},
               "levels": {name: {str(c): {m: s[m] for m in (*METRICS, "failed", "requests")} for c, s in r.items()}
                          for name, r in results.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
