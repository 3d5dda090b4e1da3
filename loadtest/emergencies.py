"""Scenario "peak with emergencies": the evening peak overloads the server and some patients write emergencies.

    python -m loadtest.emergencies [--url HOST:PORT] --concurrency 16 --duration-s 60 --emergency-share 0.2 \\
        --max-tokens 32 --backoff-s 0.5 --out build/emergencies

Closed-loop patients (more than the server's batch + waiting line, so it is overloaded; after an overload answer
each waits --backoff-s) send ordinary questions
(the `qizhen` workload, triage level none) with every n-th an emergency message (triage level emergency). The
report compares the two classes: how many were served, refused or shed (`[UNAVAILABLE] server overloaded`), and
TTFT (first answer text; an emergency's notice comes before it) of those served. With the orchestrator's
triage-aware admission (WINGPT_PRIORITY_LEVELS=emergency) emergencies go ahead of the line; with
WINGPT_PRIORITY_LEVELS=none they wait like everyone else. Without `--url` it starts Triton with the embedded
default (batch and line from WINGPT_MAX_BATCH_SIZE / WINGPT_MAX_QUEUE_SIZE in the environment).
Prints a table, then one JSON line; writes summary.json and requests.jsonl into `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from loadtest.metrics import RequestRecord
from loadtest.servers import local_triton
from loadtest.sweep import send_one
from loadtest.targets import Generation, TritonTarget
from loadtest.workloads import Prompt, build_workload, prompt_tokens

# Patients' messages that the built-in rules flag as emergencies (chest pain, stroke signs, poisoning, bleeding).
EMERGENCIES = ("我爸突然胸口剧痛，满头大汗", "我妈突然说话不清楚，一边手脚没力气", "孩子误吞了一瓶药，现在叫不醒",
               "我老公喝酒后吐血了，很多")
CLASSES = ("emergency", "ordinary")


def peak_with_emergencies(share: float) -> Iterator[Prompt]:
    """Ordinary prompts round-robin, every round(1/share)-th replaced by an emergency (share 0: none)."""
    if not 0 <= share <= 1:
        raise ValueError(f"--emergency-share must be between 0 and 1, got {share}")
    every = round(1 / share) if share else 0
    ordinary = itertools.cycle(build_workload("qizhen"))
    emergencies = itertools.cycle(
        Prompt(f"emergency-{i + 1}", ({"role": "user", "content": text},),
               prompt_tokens([{"role": "user", "content": text}])) for i, text in enumerate(EMERGENCIES))
    for n in itertools.count(1):
        yield next(emergencies) if every and n % every == 0 else next(ordinary)


def class_of(record: RequestRecord) -> str:
    return "emergency" if record.prompt_name.startswith("emergency-") else "ordinary"


def _ms(values_s: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values_s) * 1000, q)) if values_s else None


def summarize(records: Sequence[RequestRecord]) -> dict[str, dict]:
    """Per class: sent, served, overloaded (refused or shed), other errors, TTFT p50/p90 of the served."""
    out = {}
    for name in CLASSES:
        mine = [r for r in records if class_of(r) == name]
        served = [r for r in mine if r.ok]
        overloaded = [r for r in mine if not r.ok and "overloaded" in r.error]
        ttft = [r.ttft_s for r in served if r.ttft_s is not None]
        out[name] = {"sent": len(mine), "served": len(served), "overloaded": len(overloaded),
                     "other_errors": len(mine) - len(served) - len(overloaded),
                     "p50_ttft_ms": _ms(ttft, 50), "p90_ttft_ms": _ms(ttft, 90)}
    return out


def format_table(summary: dict[str, dict]) -> str:
    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"
    rows = ["| class | sent | served | overloaded | other errors | p50 TTFT ms | p90 TTFT ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in summary.items():
        rows.append(f"| {name} | {s['sent']} | {s['served']} | {s['overloaded']} | {s['other_errors']} | "
                    f"{cell(s['p50_ttft_ms'])} | {cell(s['p90_ttft_ms'])} |")
    return "\n".join(rows)


async def run(url: str, concurrency: int, duration_s: float, share: float, max_tokens: int,
              backoff_s: float) -> list[RequestRecord]:
    """`concurrency` patients, each sending one chat at a time for `duration_s`; after an overload answer a
    patient waits `backoff_s` before the next (as a client honouring Retry-After does), instead of hammering."""
    target = TritonTarget(url, name="triton")
    prompts = peak_with_emergencies(share)
    # Fixed-length answers (end of text ignored), so both classes ask the engine for the same work.
    generation = Generation(max_tokens, 0.0, True)
    records: list[RequestRecord] = []
    deadline = time.monotonic() + duration_s

    async def patient() -> None:
        while time.monotonic() < deadline:
            record = await send_one(target, next(prompts), generation, concurrency)
            records.append(record)
            if not record.ok:
                await asyncio.sleep(backoff_s)

    try:
        await target.check()
        await asyncio.gather(*(patient() for _ in range(concurrency)))
    finally:
        await target.aclose()
    return records


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.emergencies", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="", help="Triton gRPC host:port; empty = start the embedded default")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop workers (above batch + line)")
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--backoff-s", type=float, default=0.5, help="a patient's wait after an overload answer")
    p.add_argument("--emergency-share", type=float, default=0.2)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--label", default="", help="names the run in the summary (e.g. priority on / off)")
    p.add_argument("--out", type=Path, default=Path("build/emergencies"))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = (args.concurrency, args.duration_s, args.emergency_share, args.max_tokens, args.backoff_s)
    if args.url:
        records = asyncio.run(run(args.url, *settings))
    else:
        with local_triton(args.out) as url:
            records = asyncio.run(run(url, *settings))
    summary = {"scenario": "peak with emergencies", "label": args.label, "concurrency": args.concurrency,
               "duration_s": args.duration_s, "backoff_s": args.backoff_s,
               "emergency_share": args.emergency_share, "max_tokens": args.max_tokens,
               "classes": summarize(records)}
    (args.out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    with (args.out / "requests.jsonl").open("w") as f:
        for record in records:
            f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    print(f"peak with emergencies{' (' + args.label + ')' if args.label else ''}: {args.concurrency} workers, "
          f"{args.duration_s:.0f} s, backoff {args.backoff_s} s after an overload, emergency share "
          f"{args.emergency_share}, {len(records)} requests")
    print(format_table(summary["classes"]))
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
