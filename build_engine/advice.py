"""Which quantization to build for an expected number of concurrent patients.

The trade-off (NVIDIA ModelOpt benchmark, H200, Llama-3.1-8B, 2048 in / 128 out; speed-up over BF16):
INT4-AWQ is 1.33x at batch 1 but 0.75x at batch 8 and 0.83x at batch 64, because its dequantizing
GEMMs stop being memory-bound once several sequences share a step; FP8 is 1.3-1.4x at every batch;
W4A8 sits between. So INT4-AWQ wins single-stream latency and memory, FP8 wins throughput under
concurrency, and on Ampere (no FP8) BF16 beats INT4-AWQ once the batch is large -- if it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from build_engine.gpus import Gpu
from build_engine.sizing import FP8_QUANTS, QUANTS, Capacity

# Up to this many concurrent sequences per engine the decode step is memory-bound (batch 1 region).
LATENCY_BOUND_CONCURRENCY = 4
# Published speed-ups over BF16 by batch size, as the benchmark states them (W4A8: "between").
SPEEDUP_VS_BF16 = {
    "int4_awq": {1: "1.33x", 8: "0.75x", 64: "0.83x"},
    "fp8": {1: "1.3-1.4x", 8: "1.3-1.4x", 64: "1.3-1.4x"},
    "w4a8_awq": {1: "between INT4-AWQ and FP8", 8: "between INT4-AWQ and FP8", 64: "between INT4-AWQ and FP8"},
    "bf16": {1: "1x", 8: "1x", 64: "1x"},
}


def speedup_vs_bf16(quant: str, concurrency: int) -> str:
    """The published figure at the nearest measured batch size (1, 8 or 64)."""
    table = SPEEDUP_VS_BF16[quant]
    return table[min(table, key=lambda batch: abs(batch - concurrency))]


def supported_quants(gpu: Gpu) -> tuple[str, ...]:
    return tuple(q for q in QUANTS if gpu.has_fp8 or q not in FP8_QUANTS)


def preference(gpu: Gpu, concurrency: int) -> tuple[str, ...]:
    if concurrency <= LATENCY_BOUND_CONCURRENCY:
        order = ("int4_awq", "w4a8_awq", "fp8", "bf16")
    elif gpu.has_fp8:
        order = ("fp8", "w4a8_awq", "bf16", "int4_awq")
    else:
        order = ("bf16", "int4_awq")
    return tuple(q for q in order if q in supported_quants(gpu))


@dataclass(frozen=True)
class Advice:
    quant: str
    fits: bool
    reason: str


def recommend(gpu: Gpu, concurrency: int, capacities: dict[str, Capacity], context: int) -> Advice:
    """The preferred quantization among those whose KV cache holds `concurrency` sequences of `context`."""
    order = preference(gpu, concurrency)
    regime = ("latency-bound (few streams): INT4-AWQ reads the fewest weight bytes per token"
              if concurrency <= LATENCY_BOUND_CONCURRENCY else
              "throughput-bound: FP8 keeps its speed-up at large batches, INT4-AWQ loses it"
              if gpu.has_fp8 else
              f"throughput-bound on {gpu.name} without FP8: BF16 beats INT4-AWQ at large batches")
    too_small: list[str] = []
    for quant in order:
        if capacities[quant].sequences >= concurrency:
            skipped = f" ({', '.join(too_small)})" if too_small else ""
            return Advice(quant, True, f"{concurrency} concurrent sequences of {context} tokens are {regime}; "
                                       f"{quant} is the first choice whose KV cache holds them{skipped}")
        too_small.append(f"{quant} holds only {capacities[quant].sequences}")
    best = max(order, key=lambda q: capacities[q].sequences)
    return Advice(best, False,
                  f"no quantization holds {concurrency} sequences of {context} tokens on one engine; {best} holds "
                  f"{capacities[best].sequences}. Use an FP8/INT8 KV cache, a shorter context, more tensor "
                  "parallelism, or more engine replicas behind the load balancer")
