"""Per-request measurement and per-level summaries, with vLLM's benchmark names and definitions.

The one home of these definitions: the sweep runner, the Locust users, `make compare` and the report
generator all record requests with `Recorder` and summarise them with `summarize`, so a figure means
the same thing wherever it is printed.

- TTFT: request sent -> first non-empty text delta.
- TPOT: (e2e - TTFT) / (output tokens - 1); undefined for answers of fewer than 2 tokens.
- ITL: the gaps between successive non-empty deltas (every gap of every request is one sample).
- e2e latency (`e2el`): request sent -> end of the stream.
- Output tokens: the streamed text re-encoded with WiNGPT2's Qwen tokenizer, so every system (Triton,
  an OpenAI-compatible API, the seed-style baseline) is counted with the same ruler.
- Goodput: requests per second that completed without error and met every SLO.

Timestamps are `time.monotonic()` (CLOCK_MONOTONIC on Linux, shared by all processes of a machine),
so a stub server in another process can be checked against what a client recorded.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from wingpt.tokenizer import load_tokenizer

PERCENTILES = (50, 95, 99)


def count_tokens(text: str) -> int:
    """Output tokens of an answer: its text encoded with WiNGPT2's tokenizer (special tokens as text)."""
    return len(load_tokenizer(None).encode(text, allow_special=False)) if text else 0


@dataclass
class RequestRecord:
    """What one request did, with absolute monotonic timestamps; JSON-serialisable via `asdict`."""

    target: str
    prompt_name: str
    concurrency: int
    start: float
    end: float = 0.0
    delta_times: list[float] = field(default_factory=list)
    text: str = ""
    output_tokens: int = 0
    prompt_tokens: int = 0
    max_tokens: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def ttft_s(self) -> float | None:
        return self.delta_times[0] - self.start if self.delta_times else None

    @property
    def e2e_s(self) -> float:
        return self.end - self.start

    @property
    def tpot_s(self) -> float | None:
        ttft = self.ttft_s
        if ttft is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - ttft) / (self.output_tokens - 1)

    @property
    def itl_s(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.delta_times)]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RequestRecord:
        return cls(**data)


class Recorder:
    """Times one streamed request: create it just before sending, call `delta` per text delta and
    `finish` once (with the error's text if it failed)."""

    def __init__(self, target: str, prompt_name: str, concurrency: int, prompt_tokens: int, max_tokens: int) -> None:
        self._parts: list[str] = []
        self.record = RequestRecord(target, prompt_name, concurrency, time.monotonic(),
                                    prompt_tokens=prompt_tokens, max_tokens=max_tokens)

    def delta(self, text: str) -> None:
        if text:
            self.record.delta_times.append(time.monotonic())
            self._parts.append(text)

    def finish(self, error: str = "") -> RequestRecord:
        record = self.record
        record.end = time.monotonic()
        record.text = "".join(self._parts)
        record.output_tokens = count_tokens(record.text)
        record.error = error
        return record


@dataclass(frozen=True)
class Slo:
    """Service-level objective per request; a request meets it when every bound holds.

    Defaults are the issue's example (TTFT <= 1 s, TPOT <= 50 ms); `attainment` is the share of requests
    that must meet it for a concurrency level to count as meeting the SLO."""

    ttft_ms: float = 1000.0
    tpot_ms: float = 50.0
    attainment: float = 0.95

    @classmethod
    def from_env(cls, **overrides: float | None) -> Slo:
        env = {"ttft_ms": "LOADTEST_SLO_TTFT_MS", "tpot_ms": "LOADTEST_SLO_TPOT_MS",
               "attainment": "LOADTEST_SLO_ATTAINMENT"}
        values = {k: float(os.environ[v]) for k, v in env.items() if os.environ.get(v)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        slo = cls(**values)
        if slo.ttft_ms <= 0 or slo.tpot_ms <= 0 or not 0 < slo.attainment <= 1:
            raise ValueError(f"SLO needs ttft_ms > 0, tpot_ms > 0 and 0 < attainment <= 1, got {slo}")
        return slo

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        """The SLO flags every loadtest command takes; `from_args` reads them (env fills what is left)."""
        parser.add_argument("--slo-ttft-ms", type=float, help="default 1000 (or LOADTEST_SLO_TTFT_MS)")
        parser.add_argument("--slo-tpot-ms", type=float, help="default 50 (or LOADTEST_SLO_TPOT_MS)")
        parser.add_argument("--slo-attainment", type=float,
                            help="share of requests that must meet the SLO; default 0.95 (or LOADTEST_SLO_ATTAINMENT)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Slo:
        return cls.from_env(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms, attainment=args.slo_attainment)

    def met_by(self, record: RequestRecord) -> bool:
        ttft, tpot = record.ttft_s, record.tpot_s
        return (record.ok and ttft is not None and ttft * 1000 <= self.ttft_ms
                and (tpot is None or tpot * 1000 <= self.tpot_ms))


def _stats(name: str, values_s: Sequence[float]) -> dict[str, float | None]:
    """mean/median/p95/p99 (and std) in ms, vLLM's key names; None when there is no sample."""
    keys = [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms"] + [f"p{p}_{name}_ms" for p in PERCENTILES]
    if not values_s:
        return dict.fromkeys(keys)
    ms = np.asarray(values_s, dtype=float) * 1000
    out = {keys[0]: float(ms.mean()), keys[1]: float(np.median(ms)), keys[2]: float(ms.std())}
    out.update({f"p{p}_{name}_ms": float(np.percentile(ms, p)) for p in PERCENTILES})
    return out


def summarize(records: Iterable[RequestRecord], duration_s: float, slo: Slo) -> dict:
    """One concurrency level (or one whole run) as vLLM's benchmark summary, plus SLO figures."""
    records = list(records)
    done = [r for r in records if r.ok]
    errors: dict[str, int] = {}
    for r in records:
        if r.error:
            kind = r.error.split(":", 1)[0]
            errors[kind] = errors.get(kind, 0) + 1
    tokens = [r.output_tokens for r in done]
    good = sum(slo.met_by(r) for r in records)
    duration_s = max(duration_s, 1e-9)
    summary: dict = {
        "requests": len(records),
        "completed": len(done),
        "failed": len(records) - len(done),
        "error_rate": (len(records) - len(done)) / len(records) if records else 0.0,
        "errors": errors,
        "duration_s": duration_s,
        "total_input_tokens": sum(r.prompt_tokens for r in done),
        "total_output_tokens": sum(tokens),
        "mean_input_tokens": float(np.mean([r.prompt_tokens for r in done])) if done else 0.0,
        "mean_output_tokens": float(np.mean(tokens)) if tokens else 0.0,
        "min_output_tokens": min(tokens, default=0),
        "max_output_tokens": max(tokens, default=0),
        "share_at_max_tokens": (sum(r.output_tokens >= r.max_tokens > 0 for r in done) / len(done)) if done else 0.0,
        "request_throughput": len(done) / duration_s,
        "output_throughput": sum(tokens) / duration_s,
        "request_goodput": good / duration_s,
        "slo_attainment": good / len(records) if records else 0.0,
        "slo": asdict(slo),
    }
    summary.update(_stats("ttft", [r.ttft_s for r in done if r.ttft_s is not None]))
    summary.update(_stats("tpot", [r.tpot_s for r in done if r.tpot_s is not None]))
    summary.update(_stats("itl", [gap for r in done for gap in r.itl_s]))
    summary.update(_stats("e2el", [r.e2e_s for r in done]))
    summary["meets_slo"] = bool(records) and summary["slo_attainment"] >= slo.attainment
    return summary


def level_duration_s(records: Sequence[RequestRecord]) -> float:
    """Wall time a group of requests spanned: first start to last end."""
    if not records:
        return 0.0
    return max(r.end for r in records) - min(r.start for r in records)


def summarize_levels(records: Iterable[RequestRecord], slo: Slo) -> dict[int, dict]:
    """One summary per concurrency level (the user count when each request started)."""
    groups: dict[int, list[RequestRecord]] = {}
    for r in records:
        groups.setdefault(r.concurrency, []).append(r)
    return {c: summarize(group, level_duration_s(group), slo) for c, group in sorted(groups.items())}
