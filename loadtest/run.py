"""`make loadtest`: a bounded headless Locust run, then the report.

    python -m loadtest.run [--url HOST:PORT | --target openai --url http://HOST:PORT/v1] \\
        [--steps 1,2,4,8 | --find-capacity --max-concurrency 32 --resolution 1] [--step-s 15] \\
        [--workload mixed --max-tokens 64] [--out build/loadtest]

Without `--url` it starts Triton with the embedded default on free loopback ports for the run.
`--steps` holds each user count for `--step-s` seconds; `--find-capacity` (what `make loadtest` runs)
lets the load shape search the knee instead: double the users from `--start-concurrency` until a step
misses the SLO or `--max-concurrency` is reached, then bisect down to `--resolution` users, and stop.
The run is bounded in time (steps, or the search's levels, x step seconds) and, with `--max-requests`,
in requests. The run
directory gets Locust's CSVs and HTML (`locust_*.csv`, `locust.html`), every request
(`requests.jsonl`), the search's step verdicts (`search.json`), and the report (`summary.json`,
`report.md`, `report.html`, PNG plots); the report's knee is read from every record.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtest.capacity import DEFAULT_PROFILE, PROFILES, Search
from loadtest.metrics import Slo
from loadtest.report import load_records, system_summary, write_report
from loadtest.servers import local_triton
from loadtest.workloads import WORKLOADS

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def locust_command(args: argparse.Namespace, url: str, out: Path, slo: Slo, search: Search | None) -> list[str]:
    user = "TritonChatUser" if args.target == "triton" else "OpenAIChatUser"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
        "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "locust.html"),
        "--stop-timeout", str(int(args.timeout_s)), "--only-summary", "--loglevel", "WARNING",
        "--lt-target", args.target, "--lt-workload", args.workload, "--lt-max-tokens", str(args.max_tokens),
        "--lt-prompt-tokens", str(args.prompt_tokens), "--lt-steps", args.steps or "1",
        "--lt-step-s", str(args.step_s),
        "--lt-max-requests", str(args.max_requests), "--lt-think-s", str(args.think_s),
        "--lt-timeout-s", str(args.timeout_s), "--lt-out", str(out), "--lt-model", args.model,
    ]
    if search:
        command += ["--lt-find-capacity", "--lt-start-concurrency", str(search.start),
                    "--lt-max-concurrency", str(search.maximum), "--lt-resolution", str(search.resolution),
                    "--lt-slo-ttft-ms", str(slo.ttft_ms), "--lt-slo-tpot-ms", str(slo.tpot_ms),
                    "--lt-slo-attainment", str(slo.attainment)]
    if args.label:
        command += ["--lt-label", args.label]
    if args.api_key_env:
        command += ["--lt-api-key-env", args.api_key_env]
    if args.ignore_eos:
        command.append("--lt-ignore-eos")
    return [*command, user]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=("triton", "openai"), default="triton")
    p.add_argument("--url", default="", help="triton HOST:PORT or OpenAI base URL; empty: start a local Triton")
    p.add_argument("--model", default="wingpt2")
    p.add_argument("--api-key-env", default="")
    p.add_argument("--label", default="")
    p.add_argument("--steps", default=None, help="concurrent users per step (default 1,2,4,8; or --find-capacity)")
    p.add_argument("--step-s", type=float, default=15.0, help="seconds per step")
    p.add_argument("--max-requests", type=int, default=0, help="stop after this many requests (0: time only)")
    p.add_argument("--think-s", type=float, default=0.0)
    p.add_argument("--workload", choices=WORKLOADS, default="mixed")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=0)
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--timeout-s", type=float, default=120.0)
    Slo.add_flags(p)
    Search.add_flags(p)
    p.add_argument("--patients", type=int, default=500)
    p.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE,
                   help="the chart profile the replica plan is for (GPUs per replica, PodDisruptionBudget)")
    p.add_argument("--out", default="build/loadtest")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "requests.jsonl").unlink(missing_ok=True)
    try:
        slo = Slo.from_args(args)
        search = Search.from_args(args)
        if search and args.steps:
            raise ValueError("give either --steps or --find-capacity, not both")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.steps = args.steps or ("" if search else "1,2,4,8")
    if args.target == "openai" and not args.url:
        print("error: --target openai needs --url http(s)://HOST:PORT/v1", file=sys.stderr)
        return 2
    server = contextlib.nullcontext(args.url) if args.url else local_triton(out)
    with server as url:
        command = locust_command(args, url, out, slo, search)
        shape = (f"knee search {search.start}..{search.maximum} users to {search.resolution}" if search
                 else f"steps {args.steps}")
        print(f"loadtest: {args.target} at {url}, {shape} x {args.step_s:g} s -> {out}", file=sys.stderr)
        locust = subprocess.run(command, check=False)
    if locust.returncode not in (0, 1):  # Locust exits 1 when any request failed: that is a result
        print(f"error: locust exited with code {locust.returncode}", file=sys.stderr)
        return locust.returncode
    records = load_records(out / "requests.jsonl") if (out / "requests.jsonl").is_file() else []
    if not records:
        print("error: no request completed; see the output above", file=sys.stderr)
        return 1
    summary = system_summary(args.label or records[0].target, records, slo, args.patients, args.profile, search)
    if search and (out / "search.json").is_file():
        summary["search_steps"] = json.loads((out / "search.json").read_text(encoding="utf-8"))["steps"]
    summary["locust_command"] = shlex.join(command[2:])
    write_report(out, summary, "python -m loadtest.run " + shlex.join(argv))
    print((out / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
