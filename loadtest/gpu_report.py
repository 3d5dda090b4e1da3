"""Plots and the Markdown table of a GPU capacity run (loadtest/gpu_capacity.py), made where matplotlib is.

    python -m loadtest.gpu_report docs/benchmarks/h100

Reads `gpu_capacity_all.json` (or the halves `gpu_capacity_engine.json` and `gpu_capacity_serving.json`)
from the directory, writes
`throughput.png` and `ttft.png` there, and prints the table and the goal ratios as Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(directory: Path) -> tuple[dict, dict]:
    """(engine part, serving part): from one `--part all` run if there is one, else from the two halves."""
    whole = directory / "gpu_capacity_all.json"
    if whole.is_file():
        report = json.loads(whole.read_text(encoding="utf-8"))
        return report, report
    engine = json.loads((directory / "gpu_capacity_engine.json").read_text(encoding="utf-8"))
    serving = json.loads((directory / "gpu_capacity_serving.json").read_text(encoding="utf-8"))
    return engine, serving


def baseline_throughput(engine: dict) -> float:
    """The seed-style baseline's aggregate output tokens/s: one request at a time, so its best level."""
    return max(level["output_throughput"] for level in engine["seed_baseline"]["levels"].values())


def table(engine: dict, serving: dict) -> str:
    memory = serving["gpu_memory_mib"]
    rows = ["| system | streams | prompt tok | TTFT p50 / p95 (ms) | TPOT p50 / p95 (ms) | output tok/s | req/s "
            "| errors | GPU memory (MiB) |", "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |"]

    def row(system: str, c: str, level: dict, mem: object) -> str:
        return (f"| {system} | {c} | {level['mean_input_tokens']:.0f} | {level['p50_ttft_ms']:.0f} / "
                f"{level['p95_ttft_ms']:.0f} | {level['p50_tpot_ms']:.1f} / {level['p95_tpot_ms']:.1f} | "
                f"{level['output_throughput']:.0f} | {level['request_throughput']:.2f} | {level['failed']} | {mem} |")

    for c, level in engine["seed_baseline"]["levels"].items():
        rows.append(row("seed-style baseline (HTTP, `generate` one at a time)", c, level, "-"))
    for c, level in serving["triton"].items():
        rows.append(row("Triton ensemble + torch engine (gRPC)", c, level, memory.get(f"short_c{c}", "-")))
    for c, level in serving["triton_long_prompt"].items():
        rows.append(row("Triton, long prompt", c, level, memory.get(f"long_c{c}", "-")))
    return "\n".join(rows)


def goals(engine: dict, serving: dict) -> str:
    base = baseline_throughput(engine)
    roof = engine["roofline"]["tpot_ms"]
    direct = engine["engine_direct"]
    one = serving["triton"]["1"]
    lines = [
        f"- Output throughput at 64 streams / seed-style baseline: {serving['triton']['64']['output_throughput']:.0f}"
        f" / {base:.1f} tok/s = **{serving['triton']['64']['output_throughput'] / base:.0f}x** (goal >= 15x)",
        f"- TTFT p95 at 32 streams: **{serving['triton']['32']['p95_ttft_ms']:.0f} ms** (goal <= 1000 ms)",
        f"- Single-stream TPOT through Triton {one['p50_tpot_ms']:.1f} ms against the bf16 roofline {roof:.2f} ms: "
        f"**{one['p50_tpot_ms'] / roof:.1f}x** (goal <= 2x)",
        f"- Serving overhead, single stream: engine straight TTFT {direct['ttft_ms']:.1f} ms / TPOT "
        f"{direct['tpot_ms']:.1f} ms; through Triton over gRPC {one['p50_ttft_ms']:.1f} / {one['p50_tpot_ms']:.1f} ms "
        f"({one['p50_ttft_ms'] - direct['ttft_ms']:+.1f} ms TTFT, {one['p50_tpot_ms'] - direct['tpot_ms']:+.1f} ms "
        "per token)",
    ]
    if "engine_direct_no_graph" in engine:
        off = engine["engine_direct_no_graph"]
        lines.append(f"- The engine straight with its single-stream CUDA graph off (WINGPT_CUDA_GRAPH=0): TTFT "
                     f"{off['ttft_ms']:.1f} ms, TPOT {off['tpot_ms']:.1f} ms = "
                     f"{off['tpot_ms'] / roof:.1f}x the roofline")
    if "tpot_ms" in engine.get("cuda_graph_decode", {}):
        graph = engine["cuda_graph_decode"]["tpot_ms"]
        lines.append(f"- The same model decoding one stream as a replayed CUDA graph over a static KV cache: "
                     f"{graph:.2f} ms per token = **{graph / roof:.2f}x** the roofline")
    return "\n".join(lines)


def plots(engine: dict, serving: dict, directory: Path) -> None:
    levels = sorted(serving["triton"], key=int)
    xs = [int(c) for c in levels]
    base = baseline_throughput(engine)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [serving["triton"][c]["output_throughput"] for c in levels], "o-", label="Triton + torch engine")
    ax.plot(xs, [base] * len(xs), "s--", label="seed-style baseline (any concurrency)")
    ax.plot(xs, [1000 / engine["roofline"]["tpot_ms"]] * len(xs), ":", label="bf16 roofline, one stream")
    ax.set(xscale="log", xlabel="concurrent streams", ylabel="output tokens/s",
           title="WiNGPT2-7B shape, bf16, H100: throughput")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "throughput.png", dpi=120)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("p50_ttft_ms", "o-"), ("p95_ttft_ms", "o--")):
        ax.plot(xs, [serving["triton"][c][key] for c in levels], style, label=f"Triton {key[:3]}")
    seed = engine["seed_baseline"]["levels"]
    ax.plot([int(c) for c in seed], [seed[c]["p95_ttft_ms"] for c in seed], "s--", label="seed-style baseline p95")
    ax.axhline(1000, color="grey", linewidth=0.8, label="SLO 1 s")
    ax.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="time to first token (ms)",
           title="WiNGPT2-7B shape, bf16, H100: TTFT")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "ttft.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0] if args else "docs/benchmarks/h100")
    engine, serving = load(directory)
    plots(engine, serving, directory)
    print(table(engine, serving))
    print()
    print(goals(engine, serving))
    return 0


if __name__ == "__main__":
    sys.exit(main())
