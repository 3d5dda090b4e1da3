"""The capacity answer: the knee (the largest concurrency that still meets the SLO) and what it means in
replicas and GPUs.

One home for all three pieces, so the sweep runner, the Locust shape, the reports, the README and
docs/helm.md say the same thing:

- `next_level`: which concurrency to measure next. Double from `--start-concurrency` until a level fails
  (or `--max-concurrency` is reached), then bisect between the last passing and the first failing
  level until they are `--resolution` users apart.
- `find_knee`: what measured levels show. The knee is the largest level meeting the SLO below the
  smallest failing one (a level passing above a failure is luck, not capacity); when nothing failed,
  the answer is only "at least N".
- `plan_replicas`: replicas and GPUs for a number of concurrent patients, with what an operator adds:
  `ceil(patients / knee)` serving replicas plus the spares the chart's PodDisruptionBudget implies
  (`pdb.maxUnavailable`: N+1 with the default 1), times the GPUs per replica of the chart profile
  (`model.tensorParallel`, none for the CPU target). Read from the chart's values files, not restated.

    python -m loadtest.capacity --patients 500 --per-replica 32 --profile 7b-int4
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "wingpt"
PROFILES = ("7b-int4", "14b-tp2", "cpu-dev")
DEFAULT_PROFILE = "7b-int4"
# The figures shown for the levels either side of the knee.
FIGURES = ("requests", "failed", "slo_attainment", "p95_ttft_ms", "p95_tpot_ms", "output_throughput")


@dataclass(frozen=True)
class Search:
    """How the knee is searched: from `start`, doubling up to `maximum`, then bisected to `resolution` users."""

    start: int = 1
    maximum: int = 64
    resolution: int = 1

    def __post_init__(self) -> None:
        if self.start < 1:
            raise ValueError(f"--start-concurrency must be >= 1, got {self.start}")
        if self.maximum < self.start:
            raise ValueError(f"--max-concurrency must be >= --start-concurrency ({self.start}), got {self.maximum}")
        if self.resolution < 1:
            raise ValueError(f"--resolution must be >= 1 (users), got {self.resolution}")

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        """The search flags of the sweep runner and `make loadtest`; `from_args` reads them."""
        parser.add_argument("--find-capacity", action="store_true",
                            help="search the knee: double the concurrency until the SLO fails, then bisect")
        parser.add_argument("--start-concurrency", type=int, default=1, help="first level of the search (1)")
        parser.add_argument("--max-concurrency", type=int, default=64,
                            help="the search never goes above this many concurrent users (64)")
        parser.add_argument("--resolution", type=int, default=1,
                            help="bisect until the last passing and first failing level are this many users apart")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Search | None:
        if not args.find_capacity:
            return None
        return cls(args.start_concurrency, args.max_concurrency, args.resolution)


def next_level(results: Mapping[int, bool], search: Search) -> int | None:
    """The next concurrency to measure, given which levels met the SLO so far; None when the search is done."""
    if not results:
        return search.start
    failing = [c for c, ok in results.items() if not ok]
    if not failing:
        top = max(results)
        return None if top >= search.maximum else min(2 * top, search.maximum)
    fail = min(failing)
    passing = [c for c, ok in results.items() if ok and c < fail]
    if not passing:  # even the first level failed: halve until one passes or 1 fails
        return None if fail == 1 else max(1, fail // 2)
    low = max(passing)
    return None if fail - low <= search.resolution else (low + fail) // 2


def figures(summary: Mapping) -> dict:
    return {k: summary.get(k) for k in FIGURES}


@dataclass(frozen=True)
class Knee:
    """What the measured levels show about the knee."""

    concurrency: int | None  # largest level meeting the SLO below the smallest failing one
    first_failing: int | None  # smallest level that failed; None: the SLO held at every level tried
    tried_up_to: int  # the highest level measured
    below: dict | None  # figures at `concurrency`
    above: dict | None  # figures at `first_failing`
    not_counted: tuple[int, ...] = ()  # levels that passed above a failing one

    @property
    def status(self) -> str:
        """knee: bracketed by a pass and a failure; at_least: nothing failed; none: nothing passed."""
        if self.concurrency is None:
            return "none"
        return "at_least" if self.first_failing is None else "knee"

    def line(self, engine: str) -> str:
        if self.status == "none":
            return (f"No tested concurrency met the SLO on {engine} (it failed already at {self.first_failing} "
                    "concurrent chat(s)): no replica count can be planned from this run "
                    "(lower the load, relax the SLO, or use a faster engine).")
        if self.status == "at_least":
            return (f"Capacity of {engine}: at least {self.concurrency} concurrent chats per replica "
                    f"(the SLO held at every level tried up to {self.concurrency}; the knee is higher).")
        below, above = self.below or {}, self.above or {}
        line = (f"Capacity of {engine}: {self.concurrency} concurrent chats per replica meet the SLO "
                f"(knee between {self.concurrency} and {self.first_failing}; at {self.concurrency}: {_fig(below)}; "
                f"at {self.first_failing}: {_fig(above)}).")
        if self.not_counted:
            line += f" Levels passing above the first failure are not counted: {', '.join(map(str, self.not_counted))}."
        return line


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _fig(s: Mapping) -> str:
    text = (f"{100 * (s.get('slo_attainment') or 0):.0f}% of {s.get('requests', 0)} requests met it, "
            f"TTFT p95 {_ms(s.get('p95_ttft_ms'))}, TPOT p95 {_ms(s.get('p95_tpot_ms'))}")
    return text + (f", {s['failed']} failed" if s.get("failed") else "")


def find_knee(levels: Mapping[int, Mapping]) -> Knee:
    """The knee of measured levels (per-level summaries with `meets_slo`, keyed by concurrency)."""
    if not levels:
        raise ValueError("no level was measured")
    ordered = sorted(levels)
    failing = [c for c in ordered if not levels[c]["meets_slo"]]
    fail = failing[0] if failing else None
    passing = [c for c in ordered if levels[c]["meets_slo"] and (fail is None or c < fail)]
    knee = passing[-1] if passing else None
    return Knee(concurrency=knee, first_failing=fail, tried_up_to=ordered[-1],
                below=None if knee is None else figures(levels[knee]),
                above=None if fail is None else figures(levels[fail]),
                not_counted=tuple(c for c in ordered if fail is not None and c > fail and levels[c]["meets_slo"]))


@dataclass(frozen=True)
class Profile:
    """What the chart deploys per replica for one values profile (helm/wingpt/values-<name>.yaml)."""

    name: str
    values_file: str
    gpus_per_replica: int  # model.tensorParallel; 0 for the CPU target
    spare_replicas: int  # pdb.maxUnavailable: replicas a drain may take down while the rest must hold the load


@cache
def chart_profile(name: str) -> Profile:
    """The profile's figures read from the chart (values.yaml overlaid with the profile's file)."""
    if name not in PROFILES:
        raise ValueError(f"--profile must be one of {', '.join(PROFILES)}, got {name!r}")
    path = CHART / f"values-{name}.yaml"
    values = _overlay(yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8")),
                      yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    gpus = 0 if values["target"] == "cpu" else int(values["model"]["tensorParallel"])
    spares = int(values["pdb"]["maxUnavailable"]) if values["pdb"]["enabled"] else 0
    return Profile(name, f"helm/wingpt/{path.name}", gpus, spares)


def _overlay(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _overlay(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass(frozen=True)
class ReplicaPlan:
    """Replicas and GPUs for `patients` concurrent chats when one replica serves `per_replica` within the SLO."""

    patients: int
    per_replica: int
    upper_bound: bool  # per_replica is only "at least": the true need may be lower
    profile: Profile

    @property
    def serving_replicas(self) -> int:
        return math.ceil(self.patients / self.per_replica)

    @property
    def replicas(self) -> int:
        return self.serving_replicas + self.profile.spare_replicas

    @property
    def gpus(self) -> int:
        return self.replicas * self.profile.gpus_per_replica

    def line(self) -> str:
        p = self.profile
        bound = "at most " if self.upper_bound else ""
        gpus = (f"{bound}{self.gpus} GPU(s) at {p.gpus_per_replica} per replica" if p.gpus_per_replica
                else "no GPU (CPU target)")
        text = (f"{self.patients} concurrent patients: {bound}{self.replicas} replica(s) = ceil({self.patients} / "
                f"{self.per_replica}) = {self.serving_replicas} serving + {p.spare_replicas} spare (the chart's "
                f"PodDisruptionBudget lets {p.spare_replicas} be down in a drain), {gpus} ({p.values_file}).")
        if self.upper_bound:
            text += (f" An upper bound: one replica served at least {self.per_replica} chats and was not pushed "
                     "to its knee.")
        return text + (" Assumes each replica runs the measured engine on the measured hardware with this workload "
                       "and SLO, and patients spread evenly over the replicas (client-side gRPC balancing, "
                       "docs/helm.md).")

    def to_json(self) -> dict:
        return {**asdict(self), "serving_replicas": self.serving_replicas, "replicas": self.replicas,
                "gpus": self.gpus}


def plan_replicas(patients: int, per_replica: int, profile: str = DEFAULT_PROFILE,
                  upper_bound: bool = False) -> ReplicaPlan:
    if patients < 1:
        raise ValueError(f"--patients must be >= 1, got {patients}")
    if per_replica < 1:
        raise ValueError(f"--per-replica must be >= 1, got {per_replica}")
    return ReplicaPlan(patients, per_replica, upper_bound, chart_profile(profile))


def capacity_answer(engine: str, levels: Mapping[int, Mapping], patients: int, profile: str = DEFAULT_PROFILE,
                    search: Search | None = None) -> dict:
    """The `capacity` block of every summary: the knee, the replica plan (None when nothing passed), the line."""
    knee = find_knee(levels)
    plan = (None if knee.concurrency is None
            else plan_replicas(patients, knee.concurrency, profile, upper_bound=knee.status == "at_least"))
    line = knee.line(engine)
    if knee.status == "knee" and search is None and knee.first_failing - knee.concurrency > 1:  # type: ignore[operator]
        line += " Not bisected: a --find-capacity run narrows it."
    line += "" if plan is None else " " + plan.line()
    return {"status": knee.status, "knee": knee.concurrency, "first_failing": knee.first_failing,
            "tried_up_to": knee.tried_up_to, "below": knee.below, "above": knee.above,
            "not_counted": list(knee.not_counted), "search": None if search is None else asdict(search),
            "plan": None if plan is None else plan.to_json(), "line": line}


def knee_marks(summary: Mapping) -> dict[str, str]:
    """Notes for the level table rows (keyed like `summary["levels"]`): where the knee and the first failure are."""
    cap = summary["capacity"]
    marks = {}
    if cap["knee"] is not None:
        marks[str(cap["knee"])] = "  <- knee" if cap["status"] == "knee" else "  <- at least (nothing failed)"
    if cap["first_failing"] is not None:
        marks[str(cap["first_failing"])] = "  <- first failing"
    return marks


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=500, help="concurrent patients to serve")
    p.add_argument("--per-replica", type=int, required=True,
                   help="the knee: concurrent chats one replica serves within the SLO (from a load test)")
    p.add_argument("--at-least", action="store_true", help="the load test never failed: the figure is a lower bound")
    p.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        plan = plan_replicas(args.patients, args.per_replica, args.profile, args.at_least)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(plan.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
