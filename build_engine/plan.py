"""`python -m build_engine.plan`: size a WiNGPT2 engine for a GPU before building it.

Prints a table of every quantization the GPU supports (weights, KV cache, sequences that fit at the
given context, one-stream decode ceiling), the recommendation for the expected concurrency, the
build settings to use, then the same as one JSON line for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from build_engine.advice import recommend, speedup_vs_bf16, supported_quants
from build_engine.errors import ConfigError
from build_engine.gpus import GPUS, gpu_by_name
from build_engine.models import SPECS, spec_by_name
from build_engine.sizing import (
    DEFAULT_KV_FRACTION,
    KV_CACHES,
    KV_REUSE_LOSS_EFFECT,
    QUANTS,
    TOKENS_PER_BLOCK,
    Capacity,
    capacity,
    check_context,
    default_max_num_tokens,
    kv_reuse_loss,
    suggested_max_batch_size,
)

GIB = 1024**3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m build_engine.plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", required=True, help=f"one of: {', '.join(g.name for g in GPUS.values())}")
    p.add_argument("--model", default="7b", help=f"one of: {', '.join(SPECS)} (default 7b)")
    p.add_argument("--quant", choices=QUANTS, help="the quantization you intend to build (default: recommended)")
    p.add_argument("--kv-cache", choices=KV_CACHES, default="auto", help="KV cache dtype (auto = bf16)")
    p.add_argument("--tp", type=int, help="GPUs per engine (default: 1 for 7b, 2 for 14b)")
    p.add_argument("--context", type=int, help="tokens per sequence, prompt + answer (default: trained length)")
    p.add_argument("--concurrency", type=int, default=32, help="sequences generating at once per engine (32)")
    p.add_argument("--max-batch-size", type=int, default=64, help="engine max_batch_size for the activation estimate")
    p.add_argument("--kv-fraction", type=float, default=DEFAULT_KV_FRACTION,
                   help="kv_cache_free_gpu_mem_fraction (0.9)")
    p.add_argument("--gpu-mem-gib", type=float, help="override the GPU memory of the table (e.g. a MIG slice)")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> dict:
    """Everything the report shows, as plain data (the JSON line is this dict)."""
    spec = spec_by_name(args.model)
    gpu = gpu_by_name(args.gpu, args.gpu_mem_gib)
    tp = args.tp or spec.default_tp
    context = args.context or spec.trained_context
    warning = check_context(spec, context)
    if args.concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {args.concurrency}")
    if not 0 < args.kv_fraction < 1:
        raise ConfigError(f"--kv-fraction must be between 0 and 1, got {args.kv_fraction}")
    if args.quant and args.quant not in supported_quants(gpu):
        raise ConfigError(f"{args.quant} needs FP8 tensor cores (Ada or Hopper); {gpu.name} has none")
    if args.kv_cache == "fp8" and not gpu.has_fp8:
        raise ConfigError(f"an FP8 KV cache needs Ada or Hopper; {gpu.name} has none (use --kv-cache int8)")
    caps = {q: capacity(spec, gpu, q, args.kv_cache, tp, context, args.max_batch_size, args.kv_fraction)
            for q in supported_quants(gpu)}
    advice = recommend(gpu, args.concurrency, caps, context)
    chosen = args.quant or advice.quant
    batch = suggested_max_batch_size(caps[chosen].sequences)
    loss = kv_reuse_loss(chosen, args.kv_cache)
    return {
        "gpu": gpu.name, "gpu_memory_gib": round(gpu.memory_bytes / GIB, 2), "model": spec.name, "tp": tp,
        "context": context, "concurrency": args.concurrency, "kv_cache": args.kv_cache,
        "params": spec.total_params, "tokens_per_block": TOKENS_PER_BLOCK, "warning": warning,
        "options": {q: {**asdict(c), "speedup_vs_bf16": speedup_vs_bf16(q, args.concurrency)} for q, c in caps.items()},
        "recommended": advice.quant, "recommendation_fits": advice.fits, "reason": advice.reason,
        "chosen": chosen,
        "kv_reuse_lost": f"{loss}, {KV_REUSE_LOSS_EFFECT}" if loss else "",
        "suggested": {"max_batch_size": batch, "max_seq_len": context,
                      "max_num_tokens": default_max_num_tokens(context, max(batch, 1))},
    }


def _row(quant: str, cap: Capacity, chosen: str) -> str:
    mark = "*" if quant == chosen else " "
    return (f"{mark}{quant:<9} {cap.weights_per_gpu / GIB:>8.2f} {cap.kv_pool / GIB:>8.2f} "
            f"{cap.kv_per_token / 1024:>9.0f} {cap.sequences:>10d} {cap.decode_tok_s_ceiling:>11.0f}")


def render(report: dict) -> str:
    s = report["suggested"]
    lines = [
        f"WiNGPT2-{report['model'].upper()} ({report['params'] / 1e9:.2f} B parameters) on {report['tp']} x "
        f"{report['gpu']} ({report['gpu_memory_gib']} GiB each), context {report['context']} tokens, "
        f"KV cache {report['kv_cache']}, {report['concurrency']} concurrent sequences expected",
    ]
    if report["warning"]:
        lines.append(report["warning"])
    lines += [
        "",
        f" {'quant':<9} {'weights':>8} {'KV pool':>8} {'KV KiB/tok':>9} {'seqs@ctx':>10} {'1-stream':>11}",
        f" {'':<9} {'GiB/GPU':>8} {'GiB/GPU':>8} {'per GPU':>9} {'':>10} {'tok/s max':>11}",
    ]
    lines += [_row(q, cap_from(d), report["chosen"]) for q, d in report["options"].items()]
    lines += [
        "",
        f"recommended: {report['recommended']} -- {report['reason']}",
        f"for {report['chosen']}: max_batch_size {s['max_batch_size']}, max_seq_len {s['max_seq_len']}, "
        f"max_num_tokens {s['max_num_tokens']}",
        f"build it: make engine MODEL_DIR=... QUANT={report['chosen']} TP={report['tp']} "
        f"MAX_BATCH_SIZE={s['max_batch_size']} MAX_SEQ_LEN={s['max_seq_len']}"
        + ("" if report["kv_cache"] == "auto" else f" KV_CACHE={report['kv_cache']}")
        + (" ENGINE_ACCEPT_NO_KV_REUSE=1" if report["kv_reuse_lost"] else ""),
    ]
    if report["kv_reuse_lost"]:
        lines.append(f"LOST: {report['kv_reuse_lost']}; the build refuses it unless ENGINE_ACCEPT_NO_KV_REUSE=1")
    return "\n".join(lines)


def cap_from(option: dict) -> Capacity:
    return Capacity(**{k: v for k, v in option.items() if k != "speedup_vs_bf16"})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = plan(args)
    except ConfigError as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 2
    print(render(report))
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
