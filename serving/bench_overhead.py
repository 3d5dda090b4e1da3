"""`make bench-overhead`: what the serving layer adds to time-to-first-token and per-token time.

One real Triton server, one engine process, two ways in, interleaved request by request so machine noise
falls on both alike: (a) token ids straight to the engine model (`torch_llm`) over gRPC, and (b) the same
chat through the public model `ensemble` (validation, template, tokenizer, triage, detokenizer) over gRPC.
EOS is ignored, so both make exactly `--max-tokens` tokens. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import statistics
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from serving.__main__ import render_from_settings
from serving.launch import free_port, start_server, stop_server, wait_ready
from wingpt.chat_template import build_prompt_ids, parse_messages
from wingpt.engine.embedded import ensure_embedded_model
from wingpt.sampling import resolve_sampling
from wingpt.settings import ServerSettings
from wingpt.tokenizer import load_tokenizer

QUESTIONS = ["出现急性心肌梗死一般对身体带来哪些伤害", "肝肿瘤指标高就是癌症吗", "经常摇动婴儿睡觉会有什么不良反应吗",
             "宝宝15个月37.3度算发烧吗？", "泛发型白癜风的症状表现"]


def _input(name: str, array: np.ndarray) -> grpcclient.InferInput:
    dtype = {np.int32: "INT32", np.float32: "FP32", np.bool_: "BOOL", np.object_: "BYTES"}[array.dtype.type]
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def _timed_stream(client: grpcclient.InferenceServerClient, model: str, inputs: list, output: str) -> list[float]:
    """Arrival times of the responses that carry generated output (not a triage-only first response)."""
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        start = time.perf_counter()
        client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        arrivals = []
        while True:
            result, error = responses.get(timeout=300)
            if error is not None:
                raise RuntimeError(f"{model}: {error}")
            now = time.perf_counter()
            data = result.as_numpy(output)
            if data is not None and data.size and (output != "text_output" or data.reshape(-1)[0]):
                arrivals.append(now)
            if result.get_response().parameters["triton_final_response"].bool_param:
                return [t - start for t in arrivals]
    finally:
        client.stop_stream()


def _engine_inputs(ids: list[int], max_tokens: int, penalty: float) -> list:
    one = np.ones((1, 1))
    return [_input("input_ids", np.array([ids], np.int32)),
            _input("input_lengths", (one * len(ids)).astype(np.int32)),
            _input("request_output_len", (one * max_tokens).astype(np.int32)),
            _input("end_id", (-one).astype(np.int32)),
            _input("runtime_top_k", one.astype(np.int32)),
            _input("temperature", one.astype(np.float32)),
            _input("repetition_penalty", (one * penalty).astype(np.float32)),
            _input("streaming", one.astype(np.bool_))]


def _chat_inputs(question: str, max_tokens: int) -> list:
    messages = json.dumps([{"role": "user", "content": question}], ensure_ascii=False).encode()
    one = np.ones((1, 1))
    return [_input("messages", np.array([[messages]], np.object_)),
            _input("max_tokens", (one * max_tokens).astype(np.int32)),
            _input("end_id", (-one).astype(np.int32)),
            _input("stream", one.astype(np.bool_))]


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def measure(settings: ServerSettings, model_dir: Path, rounds: int, max_tokens: int) -> dict[str, list[float]]:
    tok = load_tokenizer(str(model_dir))
    penalty = resolve_sampling().repetition_penalty
    process = start_server(render_from_settings(settings, {}), settings, Path("build/bench-overhead-triton.log"))
    times: dict[str, list[float]] = {"engine_ttft": [], "ensemble_ttft": [], "engine_tpot": [], "ensemble_tpot": []}
    try:
        wait_ready(settings, process)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{settings.grpc_port}")
        for round_ in range(rounds + 1):  # round 0 warms both paths up and is not counted
            for q in QUESTIONS:
                ids, _ = build_prompt_ids(tok, parse_messages([{"role": "user", "content": q}]), 2048)
                for path, model, inputs, output in (
                    ("engine", "torch_llm", _engine_inputs(ids, max_tokens, penalty), "output_ids"),
                    ("ensemble", "ensemble", _chat_inputs(q, max_tokens), "text_output"),
                ):
                    arrivals = _timed_stream(client, model, inputs, output)
                    if round_:
                        times[f"{path}_ttft"].append(arrivals[0])
                        # the detokenizer may merge tokens into one response: divide by tokens, not responses
                        times[f"{path}_tpot"].append((arrivals[-1] - arrivals[0]) / (max_tokens - 1))
        client.close()
    finally:
        stop_server(process)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the five questions per path")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    settings = ServerSettings.from_env(repo_dir="build/bench-overhead-repo", http_port=free_port(),
                                       grpc_port=free_port(), metrics_port=free_port())
    model_dir = Path(settings.model_dir or ensure_embedded_model(settings.cache_dir))
    times = measure(settings, model_dir, args.rounds, args.max_tokens)
    result: dict[str, object] = {"machine": platform.processor() or platform.machine(),
                                 "requests_per_path": len(times["engine_ttft"]), "max_tokens": args.max_tokens}
    print(f"{'metric':<10}{'engine p50':>12}{'ensemble p50':>14}{'added p50':>11}"
          f"{'engine p95':>12}{'ensemble p95':>14}{'added p95':>11}")
    for name in ("ttft", "tpot"):
        a, b = times[f"engine_{name}"], times[f"ensemble_{name}"]
        a50, b50, a95, b95 = (_pct(a, 50) * 1e3, _pct(b, 50) * 1e3, _pct(a, 95) * 1e3, _pct(b, 95) * 1e3)
        print(f"{name + '_ms':<10}{a50:>12.2f}{b50:>14.2f}{b50 - a50:>11.2f}{a95:>12.2f}{b95:>14.2f}{b95 - a95:>11.2f}")
        result[f"{name}_ms"] = {"engine_p50": a50, "ensemble_p50": b50, "added_p50": b50 - a50,
                                "engine_p95": a95, "ensemble_p95": b95, "added_p95": b95 - a95}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
