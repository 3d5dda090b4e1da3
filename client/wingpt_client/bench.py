"""Client-side cost of wingpt_client, measured against raw tritonclient in the same run.

    python -m wingpt_client.bench --url 127.0.0.1:8001 [--streams 64] [--max-tokens 32] [--rounds 3]

Each round sends the same `--streams` concurrent greedy chats four ways, interleaved so server
drift hits all alike: wingpt_client sync (threads, one channel), wingpt_client asyncio (tasks, one
channel), raw tritonclient sync (one InferenceServerClient per stream: its sync client holds one
stream at a time) and raw tritonclient asyncio (one client, `stream_infer` per chat). The server
is the same for all, so differences in *client CPU time per streamed token* (this process only;
Triton runs elsewhere) are the client's overhead. A micro-benchmark then times the per-response
decode path alone on a real response. Latencies use vLLM's names (TTFT, TPOT, e2e); they are
dominated by the server and shown for context. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import queue
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio

from wingpt_client._protocol import parse_response
from wingpt_client.aio import AsyncWingptClient
from wingpt_client.client import WingptClient

QUESTION = "宝宝15个月37.3度算发烧吗？"
MODES = ("wingpt_client sync", "wingpt_client asyncio", "tritonclient sync", "tritonclient asyncio")


@dataclass
class Answer:
    text: str
    deltas: int
    ttft_s: float
    e2e_s: float


@dataclass
class Round:
    mode: str
    wall_s: float
    cpu_s: float
    answers: list[Answer]

    @property
    def deltas(self) -> int:
        return sum(a.deltas for a in self.answers)


class _Timer:
    """Collects one answer's deltas with their arrival times."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.parts: list[str] = []

    def delta(self, text: str) -> None:
        if text:
            if self.first is None:
                self.first = time.perf_counter()
            self.parts.append(text)

    def answer(self) -> Answer:
        end = time.perf_counter()
        return Answer("".join(self.parts), len(self.parts), (self.first or end) - self.start, end - self.start)


def _messages(prompt: str) -> str:
    return json.dumps([{"role": "user", "content": prompt}], ensure_ascii=False)


def _raw_inputs(module: object, prompt: str, max_tokens: int) -> list[object]:
    """The same four tensors wingpt_client sends, built the tritonclient way."""
    inputs = []
    for name, datatype, value in (
        ("messages", "BYTES", np.array([[_messages(prompt).encode()]], dtype=object)),
        ("max_tokens", "INT32", np.array([[max_tokens]], dtype=np.int32)),
        ("stream", "BOOL", np.array([[True]])),
        ("temperature", "FP32", np.array([[0.0]], dtype=np.float32)),
    ):
        tensor = module.InferInput(name, [1, 1], datatype)  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def _raw_text(result: object) -> str:
    array = result.as_numpy("text_output")  # type: ignore[attr-defined]
    return "" if array is None else array.reshape(-1)[0].decode("utf-8")


class Bench:
    def __init__(self, url: str, streams: int, max_tokens: int) -> None:
        self.url = url
        self.prompts = [f"{QUESTION}（患者{i}）" for i in range(streams)]
        self.max_tokens = max_tokens
        self.pool = ThreadPoolExecutor(streams)
        self.client = WingptClient(url, timeout_s=600)
        self.raw_clients = [triton.InferenceServerClient(url) for _ in range(streams)]

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()
        for c in self.raw_clients:
            c.close()

    def _threads(self, one: Callable[[int], Answer]) -> list[Answer]:
        return list(self.pool.map(one, range(len(self.prompts))))

    def wingpt_sync(self) -> list[Answer]:
        def one(i: int) -> Answer:
            timer = _Timer()
            for delta in self.client.stream_chat(self.prompts[i], max_tokens=self.max_tokens, temperature=0):
                timer.delta(delta)
            return timer.answer()

        return self._threads(one)

    def raw_sync(self) -> list[Answer]:
        def one(i: int) -> Answer:
            client = self.raw_clients[i]
            responses: queue.SimpleQueue = queue.SimpleQueue()
            client.start_stream(callback=lambda result, error: responses.put((result, error)))
            timer = _Timer()
            client.async_stream_infer("ensemble", _raw_inputs(triton, self.prompts[i], self.max_tokens),
                                      request_id=uuid.uuid4().hex, enable_empty_final_response=True)
            while True:
                result, error = responses.get()
                if error is not None:
                    raise error
                timer.delta(_raw_text(result))
                if result.get_response().parameters["triton_final_response"].bool_param:
                    break
            client.stop_stream()
            return timer.answer()

        return self._threads(one)

    async def wingpt_async(self) -> list[Answer]:
        async with AsyncWingptClient(self.url, timeout_s=600) as client:
            async def one(prompt: str) -> Answer:
                timer = _Timer()
                async for delta in client.stream_chat(prompt, max_tokens=self.max_tokens, temperature=0):
                    timer.delta(delta)
                return timer.answer()

            return await asyncio.gather(*(one(p) for p in self.prompts))

    async def raw_async(self) -> list[Answer]:
        async with triton_aio.InferenceServerClient(self.url) as client:
            async def one(prompt: str) -> Answer:
                async def requests():  # one request, then the stream half-closes
                    yield {"model_name": "ensemble", "inputs": _raw_inputs(triton_aio, prompt, self.max_tokens),
                           "request_id": uuid.uuid4().hex}

                timer = _Timer()
                async for result, error in client.stream_infer(requests()):
                    if error is not None:
                        raise error
                    timer.delta(_raw_text(result))
                return timer.answer()

            return await asyncio.gather(*(one(p) for p in self.prompts))

    def run(self, mode: str) -> Round:
        runners: dict[str, Callable[[], list[Answer]]] = {
            MODES[0]: self.wingpt_sync,
            MODES[1]: lambda: asyncio.run(self.wingpt_async()),
            MODES[2]: self.raw_sync,
            MODES[3]: lambda: asyncio.run(self.raw_async()),
        }
        wall, cpu = time.perf_counter(), time.process_time()
        answers = runners[mode]()
        return Round(mode, time.perf_counter() - wall, time.process_time() - cpu, answers)


def decode_cost_us(url: str, repeat: int) -> dict[str, float]:
    """Per-response cost of turning one real streamed response into text, without any network."""
    raw = triton.InferenceServerClient(url)
    captured: queue.SimpleQueue = queue.SimpleQueue()
    raw.start_stream(callback=lambda result, error: captured.put(result))
    raw.async_stream_infer("ensemble", _raw_inputs(triton, QUESTION, 2), request_id=uuid.uuid4().hex)
    response = triton.service_pb2.ModelStreamInferResponse(infer_response=captured.get(timeout=60).get_response())
    raw.stop_stream()
    raw.close()

    def per_call(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - start) / repeat * 1e6

    return {
        "wingpt_client parse_response": per_call(lambda: parse_response(response, "id")),
        "tritonclient InferResult.as_numpy": per_call(
            lambda: _raw_text(triton.InferResult(response.infer_response))),
    }


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(rounds: list[Round]) -> dict[str, dict[str, float]]:
    out = {}
    for mode in MODES:
        mine = [r for r in rounds if r.mode == mode]
        answers = [a for r in mine for a in r.answers]
        tpot = [(a.e2e_s - a.ttft_s) / (a.deltas - 1) for a in answers if a.deltas > 1]
        out[mode] = {
            "rounds": len(mine),
            "requests": len(answers),
            "output_tokens": sum(r.deltas for r in mine),
            "output_tok_s": statistics.median(r.deltas / r.wall_s for r in mine),
            "request_s": statistics.median(len(r.answers) / r.wall_s for r in mine),
            "ttft_p50_ms": _p([a.ttft_s for a in answers], 50) * 1e3,
            "ttft_p99_ms": _p([a.ttft_s for a in answers], 99) * 1e3,
            "tpot_p50_ms": _p(tpot, 50) * 1e3,
            "e2e_p50_ms": _p([a.e2e_s for a in answers], 50) * 1e3,
            "client_cpu_us_per_token": statistics.median(r.cpu_s / r.deltas * 1e6 for r in mine),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wingpt_client.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decode-repeat", type=int, default=20000)
    args = parser.parse_args(argv)

    bench = Bench(args.url, args.streams, args.max_tokens)
    try:
        info = bench.client.model_info()
        bench.run(MODES[0])  # warm-up: connections, server caches, thread pool
        rounds = [bench.run(mode) for _ in range(args.rounds) for mode in MODES]
    finally:
        bench.close()
    texts = {r.mode: [a.text for a in r.answers] for r in rounds}
    identical = all(t == texts[MODES[0]] for t in texts.values())
    summary = summarize(rounds)
    decode = decode_cost_us(args.url, args.decode_repeat)

    print(f"wingpt_client bench: {args.streams} concurrent greedy streams x {args.max_tokens} max tokens, "
          f"{args.rounds} rounds per mode; Triton {info.server_version}, embedded_default={info.embedded_default}")
    print(f"client: Python {platform.python_version()}, {platform.machine()}, {platform.processor() or '?'}")
    header = (f"{'mode':24} {'tokens':>7} {'tok/s':>7} {'req/s':>6} {'TTFT p50':>9} {'TTFT p99':>9} "
              f"{'TPOT p50':>9} {'e2e p50':>8} {'client CPU µs/token':>20}")
    print(header)
    for mode, s in summary.items():
        print(f"{mode:24} {s['output_tokens']:7d} {s['output_tok_s']:7.1f} {s['request_s']:6.2f} "
              f"{s['ttft_p50_ms']:7.0f}ms {s['ttft_p99_ms']:7.0f}ms {s['tpot_p50_ms']:7.1f}ms "
              f"{s['e2e_p50_ms']:6.0f}ms {s['client_cpu_us_per_token']:20.1f}")
    overhead = {
        "sync": summary[MODES[0]]["client_cpu_us_per_token"] - summary[MODES[2]]["client_cpu_us_per_token"],
        "asyncio": summary[MODES[1]]["client_cpu_us_per_token"] - summary[MODES[3]]["client_cpu_us_per_token"],
    }
    print(f"client overhead vs raw tritonclient, CPU µs per streamed token: sync {overhead['sync']:+.1f}, "
          f"asyncio {overhead['asyncio']:+.1f} (negative: cheaper)")
    print("decode path per response: " + ", ".join(f"{k} {v:.2f} µs" for k, v in decode.items()))
    print(f"answers identical across the four modes: {'yes' if identical else 'NO'}")
    print(json.dumps({"bench": "client", "streams": args.streams, "max_tokens": args.max_tokens,
                      "rounds": args.rounds, "modes": summary, "overhead_cpu_us_per_token": overhead,
                      "decode_us_per_response": decode, "identical_answers": identical}, ensure_ascii=False))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
