"""The whole-stack GPU capacity run (issue 10) from one command, on a machine without network access.

    python -m loadtest.gpu_capacity --out build/gpu-capacity [--part all|engine|serving]

WiNGPT2-7B's exact shape (Qwen-7B v1) in bf16 with random weights initialised on the GPU (the cost of
a token depends on the shape, not on the values), measured in one run:

- roofline: the GPU's measured copy bandwidth and the weight bytes give the fastest a single stream
  can decode (every step reads every weight once);
- the in-flight batching engine straight, single stream (no Triton), with a profile of a decode step;
- the seed-style baseline (loadtest/baselines/seed_server.py: transformers `generate`, one request at
  a time) through the sweep runner's OpenAI-compatible target;
- our stack: the real Triton server (nvidia-pytriton wheel) with the project's ensemble and the torch
  engine on the GPU, driven over gRPC by the sweep runner at each concurrency, ~128 prompt tokens and
  256 output tokens (end id ignored, so every answer has exactly 256 tokens), and a ~2,000-token
  prompt case; GPU memory in use sampled with nvidia-smi.

Prints a table and one JSON line; writes `gpu_capacity.json` (and each sweep's summary) into --out.
`--part engine` / `--part serving` run halves (each fits one 10-minute device command). With
`--find-capacity --max-concurrency N --resolution R`, the serving part searches the knee of our stack
(loadtest/capacity.py; each level sends for `--level-s` seconds) instead of measuring the fixed `--levels`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

from loadtest.bandwidth import measure_copy_bandwidth
from loadtest.capacity import Search
from loadtest.metrics import Slo, summarize_levels
from loadtest.sweep import SweepConfig, format_table, summary_document, sweep
from loadtest.workloads import Prompt, build_workload
from wingpt.chat_template import build_prompt_ids, parse_messages
from wingpt.engine.checkpoint import load_model, qwen_v1_config, write_random_weights_checkpoint
from wingpt.engine.engine import PagedEngine
from wingpt.engine.requests import GenerationRequest
from wingpt.sampling import resolve_sampling
from wingpt.tokenizer import PADDED_VOCAB_SIZE, load_tokenizer

# Qwen-7B v1 = WiNGPT2-7B: 32 layers, hidden 4096, 32 heads, MLP 11008 per branch, vocab 151,936.
SHAPE_7B = qwen_v1_config(hidden=4096, layers=32, heads=32, ffn_half=11008, vocab=PADDED_VOCAB_SIZE,
                          seq_length=4096)
OUTPUT_TOKENS = 256
SHORT_PROMPT_TOKENS = 128
LONG_PROMPT_TOKENS = 2000


class GpuMemory:
    """Peak `nvidia-smi` memory.used (MiB) while a block runs: whole-GPU, all processes (Triton's stubs too)."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s

    @staticmethod
    def used_mib() -> int:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])

    @contextmanager
    def peak(self, into: dict, key: str):
        stop = threading.Event()
        peak = [self.used_mib()]

        def sample() -> None:
            while not stop.wait(self.every_s):
                peak[0] = max(peak[0], self.used_mib())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            into[key] = peak[0]


def prompt_ids(prompt: Prompt) -> list[int]:
    tok = load_tokenizer(None)
    ids, _ = build_prompt_ids(tok, parse_messages(json.dumps(prompt.as_messages(), ensure_ascii=False)), 4096)
    return ids


def engine_single_stream(model: torch.nn.Module, ids: list[int], runs: int = 3, graph: bool = False) -> dict:
    """TTFT and TPOT of one request straight to the engine (no Triton), median of `runs`;
    `graph`: decode steps replayed as CUDA graphs (WINGPT_CUDA_GRAPH, on by default)."""
    engine = PagedEngine(model, max_batch_size=1, max_queue_size=1, max_seq_len=4096, cuda_graphs=graph)
    engine.start()
    results = []
    try:
        for run in range(runs + 1):  # the first run warms up
            stamps: list[float] = []
            done = threading.Event()

            def on_tokens(new: list[int], finish: str | None, stamps: list[float] = stamps,
                          done: threading.Event = done) -> None:
                stamps.extend([time.monotonic()] * len(new))
                if finish is not None:
                    done.set()

            start = time.monotonic()
            engine.submit(GenerationRequest(
                request_id=f"direct-{run}", prompt_ids=ids, max_new_tokens=OUTPUT_TOKENS,
                sampling=resolve_sampling(temperature=0.0), end_id=-1, on_tokens=on_tokens,
                on_error=lambda exc, done=done: done.set()))
            done.wait(600)
            if run and len(stamps) == OUTPUT_TOKENS:
                results.append(((stamps[0] - start) * 1000, (stamps[-1] - stamps[0]) * 1000 / (len(stamps) - 1)))
    finally:
        engine.shutdown()
    results.sort(key=lambda r: r[1])
    ttft, tpot = results[len(results) // 2]
    return {"ttft_ms": ttft, "tpot_ms": tpot, "runs": len(results), "prompt_tokens": len(ids)}


@torch.inference_mode()
def profile_decode_step(model: torch.nn.Module, ids: list[int], steps: int = 32) -> dict:
    """Where a single-stream decode step's time goes: wall time per step against the GPU's kernel time
    (the gap is host-side Python and launch overhead), and kernel launches per step."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import DynamicCache

    cache = DynamicCache()
    out = model(torch.tensor([ids], device="cuda"), past_key_values=cache, use_cache=True)
    token = out.logits[:, -1:].argmax(-1)
    for _ in range(4):  # warm-up
        token = model(token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            token = model(token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_us = sum(e.device_time for e in kernels)
    return {
        "wall_ms_per_step": wall * 1000 / steps,
        "gpu_kernel_ms_per_step": gpu_us / 1000 / steps,
        "kernels_per_step": len(kernels) / steps,
        "top_kernels": [
            {"name": e.key[:80], "ms_per_step": e.device_time_total / 1000 / steps}
            for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:6]
        ],
    }


def run_engine_part(model_dir: Path, out: Path, report: dict) -> None:
    bandwidth = measure_copy_bandwidth()
    model = load_model(model_dir, "cuda", torch.bfloat16)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    report["roofline"] = {
        "copy_bandwidth_TBps": bandwidth / 1e12,
        "weight_bytes": weight_bytes,
        "tpot_ms": weight_bytes / bandwidth * 1000,
        "tokens_per_s": bandwidth / weight_bytes,
    }
    ids = prompt_ids(build_workload("seed5", SHORT_PROMPT_TOKENS)[0])
    report["engine_direct"] = engine_single_stream(model, ids, graph=True)
    report["engine_direct_no_graph"] = engine_single_stream(model, ids, graph=False)
    report["decode_profile"] = profile_decode_step(model, ids)
    del model
    torch.cuda.empty_cache()
    report["seed_baseline"] = run_seed_baseline(model_dir, out)


def run_sweep(config: SweepConfig, prompts: list[Prompt], out: Path, name: str) -> dict:
    slo = Slo.from_env()
    summary, records = asyncio.run(sweep(config, prompts, slo, log=lambda m: print(m, file=sys.stderr)))
    if config.ignore_eos:  # the engine generated exactly max_tokens: count them, not the re-encoded text
        for r in records:
            r.output_tokens = config.max_tokens if r.ok else r.output_tokens
        levels = summarize_levels(records, slo)
        summary = summary_document(config, prompts, slo, {c: levels[c] for c in summary["levels_in_order"]})
    errors = sorted({r.error for r in records if not r.ok})
    for level in summary["levels"].values():
        level["error_messages"] = errors[:3]
    (out / "sweeps").mkdir(exist_ok=True)
    (out / "sweeps" / f"{name}.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"\n== {name}\n{format_table(summary)}", flush=True)
    if errors:
        print(f"errors: {errors[:3]}", flush=True)
    return summary


def run_seed_baseline(model_dir: Path, out: Path, port: int = 9400) -> dict:
    with open(out / "seed_server.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "loadtest.baselines.seed_server", "--model-dir",
                                   str(model_dir), "--device", "cuda", "--dtype", "bfloat16", "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", server)
        prompts = build_workload("seed5", SHORT_PROMPT_TOKENS)
        config = SweepConfig(target="openai", url=f"http://127.0.0.1:{port}/v1", concurrency=(1, 4),
                             requests_per_level=4, max_tokens=OUTPUT_TOKENS, ignore_eos=True, label="seed-baseline")
        return run_sweep(config, prompts, out, "seed_baseline")
    finally:
        server.terminate()
        server.wait(60)


def _wait_http(url: str, process: subprocess.Popen, timeout_s: float = 600) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[2]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(url)


def run_serving_part(model_dir: Path, out: Path, report: dict, levels: tuple[int, ...],
                     search: Search | None = None, level_s: float = 30.0) -> None:
    from serving.__main__ import render_from_settings
    from serving.launch import start_server, stop_server, wait_ready
    from wingpt.settings import ServerSettings

    most = search.maximum if search else max(levels)
    settings = ServerSettings.from_env(
        target="gpu-torch", model_dir=str(model_dir), repo_dir=str(out.parent / "gpu-capacity-repo"),
        http_port=8400, grpc_port=8401, metrics_port=8402, max_batch_size=most, max_queue_size=2 * most,
        context_window=4096, max_tokens_default=OUTPUT_TOKENS, max_tokens_limit=1024)
    memory = GpuMemory()
    report["gpu_memory_mib"] = {"idle": memory.used_mib()}
    process = start_server(render_from_settings(settings, {}), settings, out / "tritonserver.log")
    try:
        wait_ready(settings, process, timeout_s=600)
        report["gpu_memory_mib"]["triton_loaded"] = memory.used_mib()
        url = f"127.0.0.1:{settings.grpc_port}"
        short = build_workload("mixed", SHORT_PROMPT_TOKENS)
        if search:
            config = SweepConfig(target="triton", url=url, search=search, duration_s=level_s, max_tokens=OUTPUT_TOKENS,
                                 ignore_eos=True, label="triton-torch")
            with memory.peak(report["gpu_memory_mib"], "knee_search"):
                report["triton_knee"] = run_sweep(config, short, out, "triton_knee")
            return
        report["triton"] = {}
        for c in levels:
            config = SweepConfig(target="triton", url=url, concurrency=(c,), requests_per_level=max(3, 2 * c),
                                 warmup=1 if c == levels[0] else 0, max_tokens=OUTPUT_TOKENS, ignore_eos=True,
                                 label="triton-torch")
            with memory.peak(report["gpu_memory_mib"], f"short_c{c}"):
                summary = run_sweep(config, short, out, f"triton_short_c{c}")
                report["triton"][str(c)] = summary["levels"][str(c)]
        long = build_workload("triage", LONG_PROMPT_TOKENS)
        report["triton_long_prompt"] = {}
        for c in (1, 8):
            config = SweepConfig(target="triton", url=url, concurrency=(c,), requests_per_level=max(2, c),
                                 warmup=0, max_tokens=OUTPUT_TOKENS, ignore_eos=True, label="triton-torch-long")
            with memory.peak(report["gpu_memory_mib"], f"long_c{c}"):
                summary = run_sweep(config, long, out, f"triton_long_c{c}")
                report["triton_long_prompt"][str(c)] = summary["levels"][str(c)]
    finally:
        stop_server(process, timeout_s=120)
        log = (out / "tritonserver.log").read_text(encoding="utf-8", errors="replace").splitlines()
        report["triton_log_errors"] = [line for line in log if line[:1] == "E" or "Error" in line][-20:]


def machine() -> dict:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    return {"gpu": smi, "torch": torch.__version__, "python": platform.python_version(),
            "transformers": transformers.__version__, "host_cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.gpu_capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="build/gpu-capacity")
    p.add_argument("--part", choices=("all", "engine", "serving", "graphs"), default="all",
                   help="graphs: only the direct engine with and without CUDA graphs")
    p.add_argument("--levels", default="1,8,32,64,128", help="concurrency levels for our stack")
    p.add_argument("--model-dir", default="", help="default: write a 7B-shaped random-weights checkpoint")
    Search.add_flags(p)
    p.add_argument("--level-s", type=float, default=30.0, help="with --find-capacity: seconds each level sends")
    args = p.parse_args(argv)
    search = Search.from_args(args)
    if not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model_dir) if args.model_dir else write_random_weights_checkpoint(
        out.parent / "wingpt2-7b-shape", SHAPE_7B)
    report: dict = {"bench": "loadtest.gpu_capacity", "part": args.part, "machine": machine(),
                    "shape": SHAPE_7B, "output_tokens": OUTPUT_TOKENS, "slo": asdict(Slo.from_env())}
    started = time.monotonic()
    if args.part in ("all", "engine"):
        run_engine_part(model_dir, out, report)
    if args.part == "graphs":
        model = load_model(model_dir, "cuda", torch.bfloat16)
        ids = prompt_ids(build_workload("seed5", SHORT_PROMPT_TOKENS)[0])
        report["engine_direct"] = engine_single_stream(model, ids, runs=2, graph=True)
        report["engine_direct_no_graph"] = engine_single_stream(model, ids, runs=2, graph=False)
    if args.part in ("all", "serving"):
        run_serving_part(model_dir, out, report, tuple(int(x) for x in args.levels.split(",")), search, args.level_s)
    report["elapsed_s"] = time.monotonic() - started
    (out / f"gpu_capacity_{args.part}.json").write_text(json.dumps(report, ensure_ascii=False, indent=1),
                                                        encoding="utf-8")
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
