"""`make bench-overhead`: what the serving layer adds to time-to-first-token and per-token time.

The same greedy chat requests, one at a time, (a) straight to the in-flight engine in this
process and (b) through Triton's ensemble over gRPC (preprocessing, engine, postprocessing).
Both run in one invocation on the same machine; prints a table and one JSON line.
"""

from __future__ import annotations

import json
import platform
import statistics
import threading
import time
from pathlib import Path

import torch

from serving.__main__ import render_from_settings
from serving.ensemble_calls import EnsembleStream, chat_inputs
from serving.launch import start_server, stop_server, wait_ready
from wingpt.chat_template import build_prompt_ids, parse_messages
from wingpt.engine.checkpoint import load_model
from wingpt.engine.embedded import ensure_embedded_model
from wingpt.engine.inflight import GenerationRequest, InflightBatchingEngine
from wingpt.sampling import resolve_sampling
from wingpt.settings import ServerSettings
from wingpt.tokenizer import load_tokenizer

QUESTIONS = ["出现急性心肌梗死一般对身体带来哪些伤害", "肝肿瘤指标高就是癌症吗", "经常摇动婴儿睡觉会有什么不良反应吗",
             "宝宝15个月37.3度算发烧吗？", "泛发型白癜风的症状表现"]
MAX_TOKENS = 64
ROUNDS = 4


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def _in_process(model_dir: Path, settings: ServerSettings) -> tuple[list[float], list[float]]:
    tok = load_tokenizer(str(model_dir))
    engine = InflightBatchingEngine(load_model(model_dir, "cpu", torch.float32), max_batch_size=4,
                                    max_queue_size=4, max_seq_len=settings.context_window)
    engine.start()
    ttft, tpot = [], []
    for _ in range(ROUNDS):
        for q in QUESTIONS:
            ids, _ = build_prompt_ids(tok, parse_messages([{"role": "user", "content": q}]), 2048)
            times: list[float] = []
            done = threading.Event()

            def on_tokens(new: list[int], reason: str | None, times: list[float] = times, done=done) -> None:
                times.append(time.perf_counter())
                if reason:
                    done.set()

            start = time.perf_counter()
            engine.submit(GenerationRequest(q, ids, MAX_TOKENS, resolve_sampling(), tok.end_id, on_tokens, print))
            done.wait()
            ttft.append(times[0] - start)
            tpot.append((times[-1] - times[0]) / max(1, len(times) - 1))
    engine.shutdown()
    return ttft, tpot


def _through_triton(settings: ServerSettings) -> tuple[list[float], list[float]]:
    process = start_server(render_from_settings(settings, {}), settings, Path("build/bench-overhead-triton.log"))
    try:
        wait_ready(settings, process)
        url = f"127.0.0.1:{settings.grpc_port}"
        ttft, tpot = [], []
        for _ in range(ROUNDS):
            for q in QUESTIONS:
                start = time.monotonic()
                stream = EnsembleStream(url, chat_inputs([{"role": "user", "content": q}], max_tokens=MAX_TOKENS,
                                                         stream=True))
                result = stream.read()
                stream.close()
                ttft.append(result.arrivals[0] - start)
                tpot.append((result.arrivals[-1] - result.arrivals[0]) / max(1, len(result.arrivals) - 1))
        return ttft, tpot
    finally:
        stop_server(process)


def main() -> None:
    settings = ServerSettings.from_env(repo_dir="build/bench-overhead-repo", http_port=8100, grpc_port=8101,
                                       metrics_port=8102)
    model_dir = Path(settings.model_dir or ensure_embedded_model(settings.cache_dir))
    a_ttft, a_tpot = _in_process(model_dir, settings)
    b_ttft, b_tpot = _through_triton(settings)
    rows = {
        "ttft_ms": (a_ttft, b_ttft),
        "tpot_ms": (a_tpot, b_tpot),
    }
    result: dict[str, object] = {"machine": platform.processor() or platform.machine(), "requests": len(a_ttft),
                                 "max_tokens": MAX_TOKENS}
    print(f"{'metric':<10}{'in-process p50':>16}{'triton p50':>12}{'extra p50':>11}{'in-process p95':>16}"
          f"{'triton p95':>12}{'extra p95':>11}")
    for name, (a, b) in rows.items():
        a50, b50, a95, b95 = (_pct(a, 50) * 1e3, _pct(b, 50) * 1e3, _pct(a, 95) * 1e3, _pct(b, 95) * 1e3)
        print(f"{name:<10}{a50:>16.2f}{b50:>12.2f}{b50 - a50:>11.2f}{a95:>16.2f}{b95:>12.2f}{b95 - a95:>11.2f}")
        result[name] = {"in_process_p50": a50, "triton_p50": b50, "extra_p50": b50 - a50,
                        "in_process_p95": a95, "triton_p95": b95, "extra_p95": b95 - a95}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
