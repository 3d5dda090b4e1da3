"""Fixed-concurrency sweep without Locust: latency and throughput at each concurrency level.

    python -m loadtest.sweep --target triton --url 127.0.0.1:8001 --concurrency 1,8,32 \\
        --requests-per-level 64 --workload seed5 --max-tokens 256 --prompt-tokens 128 --out build/sweep
    python -m loadtest.sweep --target openai --url http://127.0.0.1:9000/v1 --model wingpt2 ...
    python -m loadtest.sweep --url 127.0.0.1:8001 --find-capacity --max-concurrency 128 --resolution 4 ...

For each level, `c` asyncio workers each send one request at a time (closed loop) until
`--requests-per-level` requests have been sent (or `--duration-s` has passed), prompts taken
round-robin from the workload. With `--find-capacity` the levels are not given but searched
(loadtest/capacity.py): doubled from `--start-concurrency` until the SLO fails or `--max-concurrency`
is reached, then bisected to `--resolution`; the summary names the knee. Prints a table, then one
JSON line; writes `summary.json` and `requests.jsonl` (every request's timings, what
`python -m loadtest.report` plots) into `--out`.

Imports only the standard library, numpy, PyYAML (the chart's profiles; transformers needs it too), wingpt/
and wingpt_client (tritonclient, grpcio): it runs on a GPU machine that has no Locust, gevent or matplotlib.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from wingpt_client import WingptClientError

from loadtest.capacity import (
    DEFAULT_PROFILE,
    PROFILES,
    Search,
    capacity_answer,
    chart_profile,
    knee_marks,
    next_level,
)
from loadtest.metrics import Recorder, RequestRecord, Slo, summarize_levels
from loadtest.targets import (
    TARGET_KINDS,
    AsyncTarget,
    Generation,
    OpenAIEndpoint,
    OpenAITarget,
    TargetError,
    TritonTarget,
    error_text,
)
from loadtest.workloads import WORKLOADS, Prompt, build_workload


@dataclass(frozen=True)
class SweepConfig:
    """Everything one sweep does; written into summary.json so a result says how it was made."""

    target: str
    url: str
    concurrency: tuple[int, ...] = ()  # the levels; empty when `search` finds them
    workload: str = "seed5"
    requests_per_level: int = 0
    duration_s: float = 0.0
    warmup: int = 1
    max_tokens: int = 256
    prompt_tokens: int = 0
    temperature: float = 0.0
    ignore_eos: bool = False
    model: str = "wingpt2"
    api_key_env: str = ""
    timeout_s: float = 600.0
    patients: int = 500
    label: str = ""
    search: Search | None = None
    profile: str = DEFAULT_PROFILE

    def __post_init__(self) -> None:
        if self.target not in TARGET_KINDS:
            raise ValueError(f"--target must be one of {', '.join(TARGET_KINDS)}, got {self.target!r}")
        if self.search is not None and self.concurrency:
            raise ValueError("give either --concurrency levels or --find-capacity, not both")
        if self.search is None and (not self.concurrency or min(self.concurrency) < 1):
            raise ValueError(f"--concurrency needs levels >= 1, got {self.concurrency}")
        if (self.requests_per_level > 0) == (self.duration_s > 0):
            raise ValueError("give exactly one of --requests-per-level N (> 0) or --duration-s S (> 0)")
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be >= 1, got {self.max_tokens}")
        if self.patients < 1:
            raise ValueError(f"--patients must be >= 1, got {self.patients}")
        chart_profile(self.profile)

    @property
    def most_concurrent(self) -> int:
        return self.search.maximum if self.search else max(self.concurrency)

    @property
    def name(self) -> str:
        return self.label or self.target

    def generation(self) -> Generation:
        return Generation(self.max_tokens, self.temperature, self.ignore_eos)


def make_target(config: SweepConfig) -> AsyncTarget:
    """The target for a config; call inside the event loop that will use it (grpc.aio needs that)."""
    if config.target == "triton":
        return TritonTarget(config.url, config.timeout_s, name=config.name)
    endpoint = OpenAIEndpoint(config.url, config.model, config.api_key_env, config.timeout_s)
    return OpenAITarget(endpoint, config.most_concurrent, name=config.name)


async def send_one(target: AsyncTarget, prompt: Prompt, generation: Generation, concurrency: int) -> RequestRecord:
    recorder = Recorder(target.name, prompt.name, concurrency, prompt.prompt_tokens, generation.max_tokens)
    try:
        await target.send(prompt, generation, recorder)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # every failure is a result to report, never the end of the run
        return recorder.finish(error_text(exc))
    return recorder.finish()


async def run_level(target: AsyncTarget, prompts: Iterator[Prompt], generation: Generation, concurrency: int,
                    requests: int = 0, duration_s: float = 0.0) -> list[RequestRecord]:
    """`concurrency` closed-loop workers until `requests` were sent or `duration_s` passed."""
    records: list[RequestRecord] = []
    sent = 0
    deadline = time.monotonic() + duration_s

    def more() -> bool:
        return sent < requests if requests else time.monotonic() < deadline

    async def worker() -> None:
        nonlocal sent
        while more():
            sent += 1
            records.append(await send_one(target, next(prompts), generation, concurrency))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


async def sweep(config: SweepConfig, prompts: Sequence[Prompt], slo: Slo,
                log: Callable[[str], None] | None = None) -> tuple[dict, list[RequestRecord]]:
    """Run every level (given, or found by the knee search) against one target; returns (summary, all records)."""
    target = make_target(config)
    generation = config.generation()
    cycle = itertools.cycle(prompts)
    records: list[RequestRecord] = []
    levels: dict[int, dict] = {}
    try:
        await target.check()
        if config.warmup:
            await run_level(target, cycle, generation, 1, requests=config.warmup)
        given = iter(config.concurrency)
        while (concurrency := next(given, None) if config.search is None
               else next_level({c: s["meets_slo"] for c, s in levels.items()}, config.search)) is not None:
            level = await run_level(target, cycle, generation, concurrency,
                                    requests=config.requests_per_level, duration_s=config.duration_s)
            levels.update(summarize_levels(level, slo))
            records += level
            if log:
                s = levels[concurrency]
                log(f"  concurrency {concurrency}: {len(level)} requests, {s['failed']} failed, "
                    f"{s['output_throughput']:.1f} tok/s, SLO {'met' if s['meets_slo'] else 'missed'} "
                    f"({100 * s['slo_attainment']:.0f}%)")
    finally:
        await target.aclose()
    return summary_document(config, prompts, slo, levels), records


def summary_document(config: SweepConfig, prompts: Sequence[Prompt], slo: Slo, levels: dict[int, dict]) -> dict:
    return {
        "bench": "loadtest.sweep",
        "target": config.name,
        "config": asdict(config),
        "slo": asdict(slo),
        "prompt_tokens": sorted({p.prompt_tokens for p in prompts}),
        "machine": {"client": platform.node(), "python": platform.python_version(), "arch": platform.machine()},
        "levels": {str(c): levels[c] for c in sorted(levels)},
        "levels_in_order": list(levels),
        "capacity": capacity_answer(config.name, levels, config.patients, config.profile, config.search),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(summary: dict) -> str:
    """A human table: one row per concurrency level."""
    head = (f"{'conc':>5} {'reqs':>5} {'err':>4} {'TTFT p50':>9} {'p95':>8} {'TPOT p50':>9} {'p95':>7} "
            f"{'ITL p50':>8} {'e2e p50':>8} {'p95':>8} {'p99':>8} {'out tok/s':>10} {'req/s':>7} "
            f"{'goodput':>8} {'SLO%':>5} {'out tok':>8}")
    lines = [head, "      (latencies in ms; goodput in req/s meeting the SLO; out tok = mean output tokens)"]
    for c, s in summary["levels"].items():
        lines.append(
            f"{c:>5} {s['requests']:>5} {s['failed']:>4} {_ms(s['median_ttft_ms']):>9} {_ms(s['p95_ttft_ms']):>8} "
            f"{_ms(s['median_tpot_ms']):>9} {_ms(s['p95_tpot_ms']):>7} {_ms(s['median_itl_ms']):>8} "
            f"{_ms(s['median_e2el_ms']):>8} {_ms(s['p95_e2el_ms']):>8} {_ms(s['p99_e2el_ms']):>8} "
            f"{s['output_throughput']:>10.1f} {s['request_throughput']:>7.2f} {s['request_goodput']:>8.2f} "
            f"{100 * s['slo_attainment']:>5.0f} {s['mean_output_tokens']:>8.1f}{knee_marks(summary).get(c, '')}")
    slo = summary["slo"]
    lines.append(f"SLO: TTFT <= {slo['ttft_ms']:g} ms and TPOT <= {slo['tpot_ms']:g} ms for "
                 f">= {100 * slo['attainment']:g}% of requests")
    lines.append(summary["capacity"]["line"])
    return "\n".join(lines)


def write_results(out: Path, summary: dict, records: Sequence[RequestRecord]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    with (out / "requests.jsonl").open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")


def _levels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=TARGET_KINDS, default="triton")
    p.add_argument("--url", required=True, help="triton: HOST:PORT (gRPC); openai: http(s)://HOST:PORT/v1")
    p.add_argument("--model", default="wingpt2", help="openai: model name sent in each request")
    p.add_argument("--api-key-env", default="", help="openai: environment variable holding the API key")
    p.add_argument("--label", default="", help="name of this system in reports (default: the target kind)")
    p.add_argument("--concurrency", type=_levels, default=None,
                   help="levels, e.g. 1,8,32,64,128 (default 1,8,32; or --find-capacity)")
    p.add_argument("--requests-per-level", type=int, default=0, help="requests sent at each level")
    p.add_argument("--duration-s", type=float, default=0.0, help="or: seconds each level keeps sending")
    p.add_argument("--warmup", type=int, default=1, help="requests sent (one at a time) before the first level")
    p.add_argument("--workload", choices=WORKLOADS, default="seed5")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--prompt-tokens", "--long-prompt-tokens", dest="prompt_tokens", type=int, default=0,
                   help="pad every prompt to about N templated tokens (0: the questions as they are)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the model card's setting)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="ask for exactly --max-tokens tokens (openai: ignore_eos/min_tokens; triton: end_id=-1 "
                        "where the client exposes end_id)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="per-request deadline")
    Slo.add_flags(p)
    Search.add_flags(p)
    p.add_argument("--patients", type=int, default=500, help="concurrent patients for the planner line")
    p.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE,
                   help="the chart profile the replica plan is for (GPUs per replica, PodDisruptionBudget)")
    p.add_argument("--out", default="build/loadtest-sweep", help="directory for summary.json and requests.jsonl")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        search = Search.from_args(args)
        levels = args.concurrency if args.concurrency is not None else (() if search else (1, 8, 32))
        config = SweepConfig(
            target=args.target, url=args.url, concurrency=levels, workload=args.workload,
            requests_per_level=args.requests_per_level, duration_s=args.duration_s, warmup=args.warmup,
            max_tokens=args.max_tokens, prompt_tokens=args.prompt_tokens, temperature=args.temperature,
            ignore_eos=args.ignore_eos, model=args.model, api_key_env=args.api_key_env, timeout_s=args.timeout_s,
            patients=args.patients, label=args.label, search=search, profile=args.profile)
        slo = Slo.from_args(args)
        prompts = build_workload(config.workload, config.prompt_tokens)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sweep: {config.name} at {config.url}, workload {config.workload} ({len(prompts)} prompts, "
          f"{min(p.prompt_tokens for p in prompts)}-{max(p.prompt_tokens for p in prompts)} prompt tokens), "
          f"max_tokens {config.max_tokens}, " + (f"levels {','.join(map(str, config.concurrency))}" if not search else
          f"knee search {search.start}..{search.maximum} to {search.resolution} user(s)"), file=sys.stderr)
    try:
        summary, records = asyncio.run(sweep(config, prompts, slo, log=lambda m: print(m, file=sys.stderr)))
    except (TargetError, WingptClientError) as exc:
        print(f"error: {config.name} at {config.url} cannot be used: {error_text(exc)}", file=sys.stderr)
        return 3
    write_results(Path(args.out), summary, records)
    print(format_table(summary))
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
