"""`make soak`: fixed concurrency for a set duration against the embedded default (not in CI).

Starts its own server on free ports (or uses --url), keeps N streamed chats in flight for the
duration, and prints errors (expected 0), latency in the first and last tenth of the run (drift),
and the server's resident memory (tritonserver and its stub processes) at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from wingpt_client import AsyncWingptClient, WingptClientError

from serving.launch import child_pids, rss_kib, start_server, stop_server, wait_ready
from wingpt.settings import ServerSettings

QUESTIONS = [
    "宝宝15个月37.3度算发烧吗？",
    "孩子咳嗽三天了，晚上咳得厉害怎么办？",
    "高血压患者平时饮食要注意什么？",
    "最近总是失眠，有什么办法改善吗？",
]


@dataclass
class Results:
    done: list[tuple[float, float, float]] = field(default_factory=list)  # (start offset, ttft, total) seconds
    errors: Counter = field(default_factory=Counter)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _worker(client: AsyncWingptClient, worker: int, t0: float, until: float, max_tokens: int,
                  results: Results) -> None:
    i = 0
    while time.monotonic() < until:
        start = time.monotonic()
        first = None
        try:
            async for _ in client.stream_chat(QUESTIONS[(worker + i) % len(QUESTIONS)], max_tokens=max_tokens):
                first = first or time.monotonic()
            results.done.append((start - t0, (first or time.monotonic()) - start, time.monotonic() - start))
        except WingptClientError as exc:
            results.errors[type(exc).__name__] += 1
        i += 1


async def _soak(url: str, concurrency: int, duration_s: float, max_tokens: int) -> Results:
    results = Results()
    t0 = time.monotonic()
    async with AsyncWingptClient(url, retries=0) as client:
        await asyncio.gather(*(_worker(client, w, t0, t0 + duration_s, max_tokens, results)
                               for w in range(concurrency)))
    return results


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else float("nan"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.soak", description=__doc__)
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=8, help="streams kept in flight (default: the batch size)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--url", help="an already running server (then its memory is not measured)")
    args = parser.parse_args(argv)

    process = None
    if args.url is None:
        from serving.__main__ import render_from_settings

        settings = ServerSettings.from_env(repo_dir="build/soak-model-repository", http_port=_free_port(),
                                           grpc_port=_free_port(), metrics_port=_free_port())
        log = Path("build/soak-tritonserver.log")
        log.parent.mkdir(exist_ok=True)
        process = start_server(render_from_settings(settings, {}), settings, log)
        wait_ready(settings, process)
        url = f"127.0.0.1:{settings.grpc_port}"
        print(f"server: embedded default, batch {settings.max_batch_size}, queue {settings.max_queue_size}, "
              f"log {log}")
    else:
        url = args.url

    def rss() -> int:
        return rss_kib([process.pid, *child_pids(process.pid)]) if process else 0

    try:
        asyncio.run(_soak(url, args.concurrency, 10.0, args.max_tokens))  # warm-up, not counted
        rss_start = rss()
        print(f"soak: {args.concurrency} streams x {args.duration_s:.0f}s, max_tokens {args.max_tokens}, "
              f"cpu count {os.cpu_count()}", flush=True)
        results = asyncio.run(_soak(url, args.concurrency, args.duration_s, args.max_tokens))
        rss_end = rss()
    finally:
        if process is not None:
            stop_server(process, timeout_s=120)

    tenth = args.duration_s / 10
    first = [total for start, _, total in results.done if start < tenth]
    last = [total for start, _, total in results.done if start >= args.duration_s - tenth]
    ttft = [t for _, t, _ in results.done]
    print(f"requests: {len(results.done)} ok, {sum(results.errors.values())} errors {dict(results.errors)}")
    print(f"throughput: {len(results.done) / args.duration_s:.2f} answers/s")
    print(f"time to first token: p50 {_pct(ttft, 50) * 1000:.0f} ms, p95 {_pct(ttft, 95) * 1000:.0f} ms")
    print(f"answer latency first tenth: p50 {_pct(first, 50):.2f}s p95 {_pct(first, 95):.2f}s (n={len(first)})")
    print(f"answer latency last tenth:  p50 {_pct(last, 50):.2f}s p95 {_pct(last, 95):.2f}s (n={len(last)})")
    if first and last:
        print(f"latency drift (p50 last/first): {statistics.median(last) / statistics.median(first):.3f}")
    if process is not None:
        print(f"server RSS: start {rss_start / 1024:.0f} MiB, end {rss_end / 1024:.0f} MiB "
              f"({(rss_end - rss_start) / 1024:+.0f} MiB)")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
