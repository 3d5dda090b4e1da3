"""The engine straight against transformers' own batching, on one model object, in one process.

    python -m loadtest.engine_bench [--device cpu|cuda] [--shape embedded|7b] [--streams 1,8,32]
        [--prompt-tokens 32] [--output-tokens 64] [--systems engine,generate,cb] [--penalty both|1.0|1.1]

Systems, each given the same prompts (one distinct prompt per stream, all submitted at once, end id
ignored so every answer has exactly `--output-tokens` tokens, greedy):
- `engine`: the project's engine (wingpt/engine), callbacks per token;
- `engine-sync`: the same engine reading each step's tokens before launching the next (no overlap; on a CPU
  the two are the same, overlap is a GPU's default);
- `generate`: transformers' static-batch `generate` (the seed-style baseline), one batch of all streams;
- `cb`: transformers' continuous-batching manager (`init_continuous_batching`, persistent, streaming). It
  drops `RepetitionPenaltyLogitsProcessor`, so with penalty 1.1 it runs *without* it (marked in the table).

Systems run interleaved, row by row, each `--repeats` times (the median run is reported). Prints a table
and one JSON line: output tok/s, TTFT and TPOT p50/p95 (vLLM's definitions), peak GPU
memory, and on a GPU the fraction of the weight-bandwidth roofline for the batch.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import transformers

from loadtest.bandwidth import measure_copy_bandwidth
from wingpt.engine.checkpoint import load_model, qwen_v1_config, write_random_weights_checkpoint
from wingpt.engine.embedded import ensure_embedded_model
from wingpt.engine.model_runner import kv_bytes_per_token
from wingpt.tokenizer import PADDED_VOCAB_SIZE

SHAPE_7B = qwen_v1_config(hidden=4096, layers=32, heads=32, ffn_half=11008, vocab=PADDED_VOCAB_SIZE,
                          seq_length=4096)


def make_prompts(count: int, length: int, seed: int = 11) -> list[list[int]]:
    """Distinct prompts of equal length (so static `generate` needs no padding): random ordinary token ids."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 151_000, (count, length), generator=gen).tolist()


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def summarize(stamps: list[list[float]], start: float, end: float, output_tokens: int) -> dict:
    ttft = [(s[0] - start) * 1000 for s in stamps if s]
    tpot = [(s[-1] - s[0]) * 1000 / (len(s) - 1) for s in stamps if len(s) > 1]
    total = sum(len(s) for s in stamps)
    t50, t95 = percentiles(ttft)
    p50, p95 = percentiles(tpot)
    return {"output_tok_s": total / (end - start), "ttft_ms_p50": t50, "ttft_ms_p95": t95,
            "tpot_ms_p50": p50, "tpot_ms_p95": p95, "tokens": total, "complete": total == output_tokens * len(stamps)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ systems
def run_engine(model: torch.nn.Module, prompts: list[list[int]], output_tokens: int, penalty: float,
               engine_factory: Callable[[int], object]) -> dict:
    from wingpt.engine.requests import GenerationRequest
    from wingpt.sampling import resolve_sampling

    engine = engine_factory(len(prompts))
    engine.start()
    stamps: list[list[float]] = [[] for _ in prompts]
    tokens: list[list[int]] = [[] for _ in prompts]
    done = threading.Semaphore(0)

    def callbacks(i: int):
        def on_tokens(new: list[int], finish: str | None) -> None:
            stamps[i].extend([time.perf_counter()] * len(new))
            tokens[i].extend(new)
            if finish is not None:
                done.release()
        return on_tokens

    sampling = resolve_sampling(temperature=0.0, repetition_penalty=penalty)
    try:
        start = time.perf_counter()
        for i, ids in enumerate(prompts):
            engine.submit(GenerationRequest(
                request_id=f"b{i}", prompt_ids=ids, max_new_tokens=output_tokens, sampling=sampling, end_id=-1,
                on_tokens=callbacks(i), on_error=lambda exc: done.release()))
        for _ in prompts:
            done.acquire()
        end = time.perf_counter()
        stats = engine.stats()
    finally:
        engine.shutdown()
    result = summarize(stamps, start, end, output_tokens)
    # What was generated, to compare systems that must give the same tokens (engine and engine-sync).
    result["tokens_digest"] = hashlib.blake2b(json.dumps(tokens).encode(), digest_size=8).hexdigest()
    if hasattr(stats, "kv_blocks_used_peak"):  # the paged engine: the KV it actually held, and its budget
        per_block = kv_bytes_per_token(model.config, next(model.parameters()).dtype) * stats.kv_tokens_per_block
        result["kv_used_peak_mib"] = stats.kv_blocks_used_peak * per_block / 2**20
        result["kv_budget_mib"] = stats.kv_blocks_max * per_block / 2**20
        result["graph_steps"] = stats.graph_steps
        result["overlapped_steps"] = stats.overlapped_steps
    return result


def second_turn_ttft(model: torch.nn.Module, factory: Callable[[int], object], first_tokens: int,
                     repeats: int) -> dict:
    """TTFT of a chat's second turn (the first turn's prompt and answer plus a new question) on the engine
    that just served the first turn (its blocks reusable) against a fresh engine (everything prefilled)."""
    from wingpt.engine.requests import GenerationRequest
    from wingpt.sampling import resolve_sampling

    def ask(engine: object, ids: list[int], max_new: int) -> tuple[float, list[int]]:
        got: list[float | list[int]] = []
        done = threading.Event()
        out: list[int] = []

        def on_tokens(new: list[int], finish: str | None) -> None:
            if not got:
                got.append(time.perf_counter())
            out.extend(new)
            if finish is not None:
                done.set()

        start = time.perf_counter()
        engine.submit(GenerationRequest(request_id=f"t{time.monotonic_ns()}", prompt_ids=ids, max_new_tokens=max_new,
                                        sampling=resolve_sampling(temperature=0.0), end_id=-1,
                                        on_tokens=on_tokens, on_error=lambda exc: done.set()))
        done.wait(600)
        return (got[0] - start) * 1000, out

    warm, cold = [], []
    for r in range(repeats):
        first = make_prompts(1, first_tokens, seed=100 + r)[0]
        engine = factory(1, 2 * first_tokens + 64)
        engine.start()
        try:
            _, answer = ask(engine, first, 32)
            second = first + answer + make_prompts(1, 24, seed=200 + r)[0]
            warm.append(ask(engine, second, 2)[0])
        finally:
            engine.shutdown()
        engine = factory(1, 2 * first_tokens + 64)
        engine.start()
        try:
            cold.append(ask(engine, second, 2)[0])
        finally:
            engine.shutdown()
    return {"first_turn_prompt_tokens": first_tokens, "second_turn_prompt_tokens": len(second),
            "ttft_ms_reused_p50": statistics.median(warm), "ttft_ms_fresh_p50": statistics.median(cold),
            "ttft_ms_reused": warm, "ttft_ms_fresh": cold}


@torch.inference_mode()
def run_generate(model: torch.nn.Module, prompts: list[list[int]], output_tokens: int, penalty: float) -> dict:
    device = next(model.parameters()).device
    ids = torch.tensor(prompts, device=device)
    kwargs = {"max_new_tokens": output_tokens, "min_new_tokens": output_tokens, "do_sample": False,
              "repetition_penalty": penalty, "pad_token_id": 0, "eos_token_id": None}
    sync(device)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    sync(device)
    end = time.perf_counter()
    new = out.shape[1] - ids.shape[1]
    # One batch: every stream gets all its tokens at the end of the call; TTFT/TPOT are not observable.
    return {"output_tok_s": new * len(prompts) / (end - start), "ttft_ms_p50": float("nan"),
            "ttft_ms_p95": float("nan"), "tpot_ms_p50": (end - start) * 1000 / new, "tpot_ms_p95": float("nan"),
            "tokens": new * len(prompts), "complete": new == output_tokens}


class CbManager:
    """One persistent continuous-batching manager for the whole benchmark (its start-up is not timed)."""

    def __init__(self, model: torch.nn.Module, max_streams: int, output_tokens: int, prompt_tokens: int) -> None:
        from transformers import ContinuousBatchingConfig, GenerationConfig

        gen = GenerationConfig(max_new_tokens=output_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
        size = ({"max_memory_percent": 0.5} if next(model.parameters()).device.type == "cuda"
                else {"num_blocks": max(16, max_streams * (prompt_tokens + output_tokens) // 256 + 4)})
        try:
            config = ContinuousBatchingConfig(max_requests_per_batch=max_streams, **size)
        except TypeError:  # another transformers version's fields: its defaults
            config = ContinuousBatchingConfig()
        self.model = model
        self.original_attention = model.config._attn_implementation
        self.manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=config)
        self.manager.start()
        # The manager switches the shared model to an attention it can page (e.g. "paged|eager") until it stops;
        # static `generate` cannot run with it, so rows of `generate` after the first `cb` row put it back.
        self.attention = model.config._attn_implementation

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The model with its own attention implementation while the manager is idle (for `generate`)."""
        if self.attention == self.original_attention:
            yield
            return
        self.model.set_attn_implementation(self.original_attention)
        try:
            yield
        finally:
            self.model.set_attn_implementation(self.attention)

    def run(self, prompts: list[list[int]], output_tokens: int) -> dict:
        stamps: dict[str, list[float]] = {}
        start = time.perf_counter()
        for i, ids in enumerate(prompts):
            rid = f"cb{time.monotonic_ns()}-{i}"
            stamps[rid] = []
            self.manager.add_request(input_ids=ids, request_id=rid, max_new_tokens=output_tokens, streaming=True)
        finished = 0
        seen: dict[str, int] = {rid: 0 for rid in stamps}
        while finished < len(prompts):
            result = self.manager.get_result(timeout=60)
            if result is None:
                raise RuntimeError("the continuous-batching manager stopped answering")
            now = time.perf_counter()
            new = len(result.generated_tokens) - seen[result.request_id]
            seen[result.request_id] = len(result.generated_tokens)
            stamps[result.request_id].extend([now] * new)
            finished += result.is_finished()
        end = time.perf_counter()
        return summarize(list(stamps.values()), start, end, output_tokens)

    def stop(self) -> None:
        self.manager.stop(block=True)


# ------------------------------------------------------------------------------------------------ main
def load(shape: str, device: str, out: Path) -> torch.nn.Module:
    if shape == "embedded":
        return load_model(ensure_embedded_model(Path.home() / ".cache" / "wingpt"), device, torch.float32)
    model_dir = write_random_weights_checkpoint(out / "wingpt2-7b-shape", SHAPE_7B)
    return load_model(model_dir, device, torch.bfloat16)


def engine_factory(model: torch.nn.Module, prompt_tokens: int, output_tokens: int,
                   overlap: bool | None = None) -> Callable[[int], object]:
    """The paged engine as the server builds it; `overlap` False: reading each step's tokens before the next."""
    from wingpt.engine.engine import PagedEngine

    cuda = next(model.parameters()).device.type == "cuda"

    def factory(streams: int, max_seq_len: int = prompt_tokens + output_tokens + 16) -> object:
        return PagedEngine(model, max_batch_size=max(streams, 1), max_queue_size=max(streams, 1),
                           max_seq_len=max_seq_len, cuda_graphs=cuda, overlap=overlap,
                           kv_cache_free_gpu_mem_fraction=0.5)
    return factory


def roofline_fraction(model: torch.nn.Module, bandwidth: float | None, streams: int, context: int,
                      tok_s: float) -> float | None:
    """Achieved output tok/s over the bandwidth bound for the batch (weights + the batch's KV read per step)."""
    if bandwidth is None:
        return None
    cfg = model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_per_token = kv_bytes_per_token(cfg, next(model.parameters()).dtype)
    step_s = (weight_bytes + streams * context * kv_per_token) / bandwidth
    return tok_s / (streams / step_s)


def free_memory(device: torch.device) -> None:
    """Give the previous system's cached memory back, so each one starts from the same free memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.engine_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--shape", choices=("embedded", "7b"), default="embedded")
    p.add_argument("--streams", default="1,8,32")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--systems", default="engine,generate,cb")
    p.add_argument("--penalty", default="both", help="1.0, 1.1 or both")
    p.add_argument("--out", default="build/engine-bench")
    p.add_argument("--second-turn-tokens", type=int, default=0,
                   help="also: TTFT of a second chat turn after a first of this many prompt tokens, reused vs fresh")
    p.add_argument("--repeats", type=int, default=1, help="runs per row; the median by tok/s is reported")
    p.add_argument("--time-budget-s", type=float, default=1e9, help="skip the remaining rows after this long")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load(args.shape, args.device, out)
    device = next(model.parameters()).device
    bandwidth = measure_copy_bandwidth() if device.type == "cuda" else None
    streams = [int(s) for s in args.streams.split(",")]
    systems = args.systems.split(",")
    penalties = [1.0, 1.1] if args.penalty == "both" else [float(args.penalty)]
    prompts = make_prompts(max(streams), args.prompt_tokens)
    context = args.prompt_tokens + args.output_tokens // 2
    factory = engine_factory(model, args.prompt_tokens, args.output_tokens)
    sync_factory = engine_factory(model, args.prompt_tokens, args.output_tokens, overlap=False)
    # Warm up every path once (allocator, kernels, the manager's start-up) before anything is timed.
    run_engine(model, prompts, 4, 1.1, factory)  # every prefill shape of the run compiled before it is timed
    run_generate(model, prompts[:2], 4, 1.1)
    rows: list[dict] = []
    started = time.monotonic()
    report = {"bench": "loadtest.engine_bench", "machine": machine(device), "args": vars(args),
              "bandwidth_Bps": bandwidth, "rows": rows, "errors": []}

    def save() -> None:  # after every row, so a run cut short still leaves its figures
        (out / "engine_bench.json").write_text(json.dumps(report, indent=1), encoding="utf-8")

    cb = None
    try:
        for penalty in penalties:
            for n in streams:
                for system in systems:
                    if time.monotonic() - started > args.time_budget_s:
                        report["errors"].append(f"time budget spent: skipped {system} at {n} streams")
                        continue
                    try:
                        runs = []
                        for _ in range(args.repeats):
                            free_memory(device)  # the last run's engine (a reference cycle) goes before the next
                            if system in ("engine", "engine-sync"):
                                runs.append(run_engine(model, prompts[:n], args.output_tokens, penalty,
                                                       factory if system == "engine" else sync_factory))
                            elif system == "generate":
                                with cb.paused() if cb is not None else contextlib.nullcontext():
                                    runs.append(run_generate(model, prompts[:n], args.output_tokens, penalty))
                            else:
                                if cb is None:
                                    cb = CbManager(model, max(streams), args.output_tokens, args.prompt_tokens)
                                    cb.run(prompts[:2], 4)
                                runs.append(cb.run(prompts[:n], args.output_tokens) | {"penalty_applied": False})
                    except Exception as exc:  # report it and go on with the other systems
                        report["errors"].append(f"{system} at {n} streams: {type(exc).__name__}: {exc}"[:400])
                        print(report["errors"][-1], file=sys.stderr, flush=True)
                        continue
                    runs.sort(key=lambda r: r["output_tok_s"])
                    result = runs[len(runs) // 2]  # the median run: this machine is shared and noisy
                    result["repeats_tok_s"] = [r["output_tok_s"] for r in runs]
                    result.update(system=system, streams=n, penalty=penalty)
                    if device.type == "cuda":
                        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
                        result["roofline_fraction"] = roofline_fraction(model, bandwidth, n, context,
                                                                        result["output_tok_s"])
                    rows.append(result)
                    save()
                    print(format_row(result), file=sys.stderr, flush=True)
    finally:
        if cb is not None:
            try:
                cb.stop()
            except Exception as exc:
                report["errors"].append(f"stopping the manager: {type(exc).__name__}: {exc}"[:400])
    if args.second_turn_tokens:
        turn = second_turn_ttft(model, factory, args.second_turn_tokens, args.repeats)
        report["second_turn"] = turn
        print(f"second turn of {turn['second_turn_prompt_tokens']} prompt tokens: TTFT p50 "
              f"{turn['ttft_ms_reused_p50']:.0f} ms reusing the first turn's blocks, "
              f"{turn['ttft_ms_fresh_p50']:.0f} ms prefilled from scratch", file=sys.stderr, flush=True)
    report["same_tokens"] = same_tokens(rows)
    for key, same in report["same_tokens"].items():
        print(f"engine and engine-sync, {key}: {'the same tokens' if same else 'DIFFERENT TOKENS'}", file=sys.stderr)
    report["elapsed_s"] = time.monotonic() - started
    save()
    print(format_table(rows))
    print(json.dumps(report))
    return 0


def same_tokens(rows: list[dict]) -> dict[str, bool]:
    """Per streams and penalty: did overlap give exactly the tokens of the synchronous loop?"""
    digests: dict[str, dict[str, str]] = {}
    for r in rows:
        if r["system"] in ("engine", "engine-sync"):
            key = f"{r['streams']} streams, penalty {r['penalty']}"
            digests.setdefault(key, {})[r["system"]] = r["tokens_digest"]
    return {key: found["engine"] == found["engine-sync"] for key, found in digests.items() if len(found) == 2}


def format_row(r: dict) -> str:
    pen = f"{r['penalty']}" + ("" if r.get("penalty_applied", True) or r["penalty"] == 1.0 else " (not applied)")
    extra = ""
    if "peak_gpu_mib" in r:
        kv = f"{r['kv_used_peak_mib']:.0f}" if "kv_used_peak_mib" in r else "-"
        extra = f" | {r['peak_gpu_mib']:.0f} | {kv} | {r['roofline_fraction']:.2f}"
    return (f"| {r['system']} | {r['streams']} | {pen} | {r['output_tok_s']:.0f} | "
            f"{r['ttft_ms_p50']:.0f} / {r['ttft_ms_p95']:.0f} | "
            f"{r['tpot_ms_p50']:.1f} / {r['tpot_ms_p95']:.1f}{extra} |")


def format_table(rows: list[dict]) -> str:
    head = "| system | streams | repetition penalty | output tok/s | TTFT p50 / p95 (ms) | TPOT p50 / p95 (ms) |"
    rule = "| --- | ---: | --- | ---: | --- | --- |"
    if rows and "peak_gpu_mib" in rows[0]:
        head += " peak GPU MiB | KV used peak MiB | roofline fraction |"
        rule += " ---: | ---: | ---: |"
    return "\n".join([head, rule, *(format_row(r) for r in rows)])


def machine(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


if __name__ == "__main__":
    sys.exit(main())
