"""`make compare`: the same workload against the deployment and every baseline, side by side, plus the
seed's Kimi-style answer comparison (each question, every system's answer, its length and latency).

    python -m loadtest.compare [--url HOST:PORT] [--seed-baseline local|off|http://HOST:PORT/v1] \\
        [--baseline kimi=https://api.moonshot.cn/v1,model=moonshot-v1-8k,key_env=MOONSHOT_API_KEY] \\
        [--concurrency 1,4 --requests-per-level 8 --workload seed5 --max-tokens 64] [--out build/compare]

Systems: the Triton deployment (`--url`, or a local Triton on the embedded default), the seed-style
baseline (started locally on the same model by default), and any OpenAI-compatible endpoint from
`--baseline` (repeatable) or `LOADTEST_BASELINES` (the same specs, separated by spaces); API keys are
read from the environment variable named by `key_env`, never from flags. An unreachable system is
reported as such and the run goes on with the others. Writes compare.json, compare.md, compare.html,
latency.png, throughput.png and each system's requests.jsonl under `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from wingpt_client import WingptClientError

from loadtest.metrics import RequestRecord, Slo
from loadtest.report import (
    HTML_STYLE,
    LEVEL_COLUMNS,
    html_table,
    level_rows,
    markdown_table,
    plot,
    slo_text,
    system_summary,
)
from loadtest.servers import local_seed_baseline, local_triton
from loadtest.sweep import SweepConfig, make_target, send_one, sweep, write_results
from loadtest.targets import Generation, TargetError, error_text
from loadtest.workloads import WORKLOADS, build_workload, seed_comparison


@dataclass(frozen=True)
class System:
    """One system under comparison."""

    name: str
    kind: str  # triton | openai
    url: str
    model: str = "wingpt2"
    key_env: str = ""


def parse_baseline(spec: str) -> System:
    """`NAME=URL[,model=M][,key_env=VAR]` -> an OpenAI-compatible system."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"baseline {spec!r}: expected NAME=URL[,model=M][,key_env=VAR]")
    url, *options = rest.split(",")
    fields: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("model", "key_env"):
            raise ValueError(f"baseline {spec!r}: unknown option {option!r} (model=..., key_env=...)")
        fields[key] = value
    return System(name, "openai", url, fields.get("model", "wingpt2"), fields.get("key_env", ""))


@dataclass
class Outcome:
    system: System
    status: str  # "ok" or why it could not be measured
    summary: dict | None = None
    answers: list[RequestRecord] | None = None


async def _answers(config: SweepConfig, questions: list[str], max_tokens: int) -> list[RequestRecord]:
    """Each seed question once, one at a time, greedy: the Kimi-style comparison."""
    target = make_target(config)
    prompts = build_workload("seed5")
    try:
        return [await send_one(target, p, Generation(max_tokens, 0.0), 1) for p in prompts[:len(questions)]]
    finally:
        await target.aclose()


def measure(system: System, args: argparse.Namespace, slo: Slo, out: Path) -> Outcome:
    try:
        config = SweepConfig(target=system.kind, url=system.url, concurrency=args.concurrency,
                             workload=args.workload, requests_per_level=args.requests_per_level,
                             max_tokens=args.max_tokens, prompt_tokens=args.prompt_tokens, model=system.model,
                             api_key_env=system.key_env, timeout_s=args.timeout_s, patients=args.patients,
                             label=system.name)
        prompts = build_workload(config.workload, config.prompt_tokens)
        summary, records = asyncio.run(sweep(config, prompts, slo,
                                             log=lambda m: print(f"[{system.name}]{m}", file=sys.stderr)))
    except (TargetError, WingptClientError, ValueError, OSError) as exc:
        status = f"unreachable or unusable: {error_text(exc)}"
        print(f"[{system.name}] {status}; going on with the others", file=sys.stderr)
        return Outcome(system, status)
    write_results(out / system.name, summary, records)
    questions = [q["question"] for q in seed_comparison()["questions"]]
    answers = asyncio.run(_answers(config, questions, args.answer_max_tokens))
    return Outcome(system, "ok", system_summary(system.name, records, slo, args.patients), answers)


def _answer_row(record: RequestRecord) -> dict:
    return {"text": record.text, "chars": len(record.text), "tokens": record.output_tokens,
            "ttft_ms": None if record.ttft_s is None else record.ttft_s * 1000, "e2e_ms": record.e2e_s * 1000,
            "error": record.error}


def document(outcomes: list[Outcome], slo: Slo, command: str) -> dict:
    questions = seed_comparison()["questions"]
    answers = []
    for i, q in enumerate(questions):
        entry = {"question": q["question"],
                 "recorded_in_seed": {name: {"text": text, "chars": len(text)} for name, text in q["answers"].items()},
                 "systems": {}}
        for o in outcomes:
            if o.answers:
                entry["systems"][o.system.name] = _answer_row(o.answers[i])
        answers.append(entry)
    return {"bench": "loadtest.compare", "command": command, "slo": asdict(slo),
            "systems": {o.system.name: {"kind": o.system.kind, "url": o.system.url, "model": o.system.model,
                                        "status": o.status, "summary": o.summary} for o in outcomes},
            "answers": answers}


def _side_by_side(doc: dict) -> tuple[list[str], list[list[str]]]:
    header = ["system", *(h for h, _ in LEVEL_COLUMNS)]
    rows = []
    for name, s in doc["systems"].items():
        if s["summary"] is None:
            rows.append([name, s["status"]] + [""] * (len(header) - 2))
            continue
        rows += [[name, *row] for row in level_rows(s["summary"])]
    return header, rows


def _answer_rows(entry: dict) -> list[list[str]]:
    rows = []
    for name, a in entry["systems"].items():
        text = a["text"] if not a["error"] else f"[error] {a['error']}"
        ttft = "-" if a["ttft_ms"] is None else f"{a['ttft_ms']:.0f}"
        rows.append([name, str(a["chars"]), str(a["tokens"]), ttft, f"{a['e2e_ms']:.0f}", text])
    for name, a in entry["recorded_in_seed"].items():
        rows.append([name, str(a["chars"]), "", "", "", a["text"]])
    return rows


ANSWER_HEADER = ["system", "chars", "tokens", "TTFT ms", "e2e ms", "answer"]


def write_outputs(out: Path, doc: dict, slo: Slo) -> None:
    (out / "compare.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    measured = {n: s["summary"] for n, s in doc["systems"].items() if s["summary"]}
    plots = plot(measured, out, slo) if measured else []
    header, rows = _side_by_side(doc)
    capacity_lines = [s["summary"]["capacity"]["line"] for s in doc["systems"].values() if s["summary"]]
    md = ["# WiNGPT2: deployment vs baselines", "", f"Command: `{doc['command']}`", "",
          f"SLO: {slo_text(doc['slo'])}.", "", markdown_table(header, rows), ""]
    md += [f"- {line}" for line in capacity_lines] + [""] + [f"![{p}]({p})" for p in plots]
    md += ["", "## Answers to the seed's five questions",
           "Greedy, one request at a time. The seed's hand-recorded 2024 answers are shown for reference."]
    for i, entry in enumerate(doc["answers"], 1):
        md += ["", f"### {i}. {entry['question']}", "", markdown_table(ANSWER_HEADER, _answer_rows(entry))]
    (out / "compare.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    body = ["<h1>WiNGPT2: deployment vs baselines</h1>", f"<p>Command: <code>{html.escape(doc['command'])}</code></p>",
            f"<p>SLO: {html.escape(slo_text(doc['slo']))}.</p>", html_table(header, rows)]
    body += ["<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in capacity_lines) + "</ul>"]
    body += [f'<p><img src="{p}" alt="{p}"></p>' for p in plots]
    body.append("<h2>Answers to the seed's five questions</h2><p>Greedy, one request at a time. The seed's "
                "hand-recorded 2024 answers are shown for reference.</p>")
    for i, entry in enumerate(doc["answers"], 1):
        table = html_table(ANSWER_HEADER, _answer_rows(entry)).replace("<td>", "<td class='text'>")
        body += [f"<h3>{i}. {html.escape(entry['question'])}</h3>", table]
    (out / "compare.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>WiNGPT2 comparison</title>"
        f"<style>{HTML_STYLE}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")


def _levels(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="", help="the Triton deployment (HOST:PORT); empty: start a local one")
    p.add_argument("--deployment-name", default="triton")
    p.add_argument("--seed-baseline", default="local", help="local (start it on the embedded default), off, or a URL")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=URL[,model=M][,key_env=VAR]")
    p.add_argument("--concurrency", type=_levels, default=(1, 4))
    p.add_argument("--requests-per-level", type=int, default=8)
    p.add_argument("--workload", choices=WORKLOADS, default="seed5")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--answer-max-tokens", type=int, default=0, help="default: --max-tokens")
    p.add_argument("--prompt-tokens", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=300.0)
    Slo.add_flags(p)
    p.add_argument("--patients", type=int, default=500)
    p.add_argument("--out", default="build/compare")
    args = p.parse_args(argv)
    args.answer_max_tokens = args.answer_max_tokens or args.max_tokens
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        slo = Slo.from_args(args)
        extra = [parse_baseline(s) for s in [*args.baseline, *os.environ.get("LOADTEST_BASELINES", "").split()]]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        triton_url = args.url or stack.enter_context(local_triton(out))
        systems = [System(args.deployment_name, "triton", triton_url)]
        if args.seed_baseline == "local":
            systems.append(System("seed-baseline", "openai", stack.enter_context(local_seed_baseline(out))))
        elif args.seed_baseline != "off":
            systems.append(System("seed-baseline", "openai", args.seed_baseline))
        outcomes = [measure(s, args, slo, out) for s in [*systems, *extra]]
    doc = document(outcomes, slo, "python -m loadtest.compare " + shlex.join(argv))
    write_outputs(out, doc, slo)
    header, rows = _side_by_side(doc)
    print(markdown_table(header, rows))
    print(json.dumps({n: {"status": s["status"], "capacity": s["summary"] and s["summary"]["capacity"]}
                      for n, s in doc["systems"].items()}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
