"""Report from recorded requests: JSON summary, Markdown and HTML with PNG plots against concurrency.

    python -m loadtest.report build/loadtest [--slo-ttft-ms 1000 --slo-tpot-ms 50 --patients 500 --profile 7b-int4]

Reads `requests.jsonl` (written by the Locust run, the sweep runner or `make compare`) from the run
directory and writes `summary.json`, `report.md`, `report.html`, `latency.png` and `throughput.png`
next to it. Works as well on a sweep directory copied back from a GPU machine: the plots are made
here from the same records. The knee (loadtest/capacity.py) is read from the records' levels and marked
in the plots and the table.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from loadtest.capacity import DEFAULT_PROFILE, PROFILES, Search, capacity_answer, knee_marks
from loadtest.metrics import RequestRecord, Slo, summarize, summarize_levels

LATENCY_PLOTS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2el", "e2e latency"))


def load_records(path: Path) -> list[RequestRecord]:
    with path.open(encoding="utf-8") as f:
        return [RequestRecord.from_json(json.loads(line)) for line in f if line.strip()]


def system_summary(name: str, records: Sequence[RequestRecord], slo: Slo, patients: int,
                   profile: str = DEFAULT_PROFILE, search: Search | None = None) -> dict:
    """Levels, overall figures and the capacity answer of one system."""
    levels = summarize_levels(records, slo)
    overall = summarize(records, sum(s["duration_s"] for s in levels.values()), slo)
    return {"target": name, "slo": asdict(slo), "levels": {str(c): s for c, s in levels.items()},
            "overall": overall, "capacity": capacity_answer(name, levels, patients, profile, search),
            "prompt_tokens": sorted({r.prompt_tokens for r in records})}


def plot(systems: dict[str, dict], out: Path, slo: Slo) -> list[str]:
    """latency.png and throughput.png: one line per system, x = concurrent users (log2 scale); the knee of each
    system is a vertical line (solid: bracketed by a failing level, which is dotted; dashed: "at least")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({int(c) for summary in systems.values() for c in summary["levels"]})
    ticks: list[int] = []  # bisected levels crowd on a log axis: label those at least 25% apart
    for c in levels:
        if not ticks or c >= 1.25 * ticks[-1]:
            ticks.append(c)

    def users_axis(ax: object) -> None:
        for index, (name, summary) in enumerate(systems.items()):
            mark_knee(ax, name, summary["capacity"], f"C{index}")
        ax.set_xscale("log", base=2)  # type: ignore[attr-defined]
        ax.set_xticks(ticks, [str(c) for c in ticks])  # type: ignore[attr-defined]
        ax.grid(True, which="both", alpha=0.3)  # type: ignore[attr-defined]
        ax.legend(fontsize=7)  # type: ignore[attr-defined]

    def series(summary: dict, key: str) -> tuple[list[int], list[float]]:
        points = [(int(c), s[key]) for c, s in summary["levels"].items() if s[key] is not None]
        return [p[0] for p in points], [p[1] for p in points]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (metric, title) in zip(axes, LATENCY_PLOTS, strict=True):
        for name, summary in systems.items():
            for stat, style in (("median", "-o"), ("p95", "--^")):
                xs, ys = series(summary, f"{stat}_{metric}_ms")
                if xs:
                    ax.plot(xs, ys, style, label=f"{name} {'p50' if stat == 'median' else 'p95'}")
        bound = {"ttft": slo.ttft_ms, "tpot": slo.tpot_ms}.get(metric)
        if bound:
            ax.axhline(bound, color="red", linewidth=1, linestyle=":", label="SLO")
        ax.set(title=f"{title} (ms)", xlabel="concurrent users", yscale="log")
        users_axis(ax)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, summary in systems.items():
        xs, ys = series(summary, "output_throughput")
        axes[0].plot(xs, ys, "-o", label=name)
        xs, ys = series(summary, "request_throughput")
        axes[1].plot(xs, ys, "-o", label=f"{name} requests")
        xs, ys = series(summary, "request_goodput")
        axes[1].plot(xs, ys, "--s", label=f"{name} goodput (SLO met)")
    axes[0].set(title="output tokens / s", xlabel="concurrent users")
    axes[1].set(title="requests / s", xlabel="concurrent users")
    for ax in axes:
        users_axis(ax)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=80)
    plt.close(fig)
    return ["latency.png", "throughput.png"]


def mark_knee(ax: object, name: str, cap: dict, color: str) -> None:
    """Vertical lines at the knee and at the first failing level."""
    if cap["knee"] is not None:
        label = f"{name} knee {cap['knee']}" if cap["status"] == "knee" else f"{name} at least {cap['knee']}"
        ax.axvline(cap["knee"], color=color, alpha=0.6, linewidth=1.5,  # type: ignore[attr-defined]
                   linestyle="-" if cap["status"] == "knee" else "--", label=label)
    if cap["first_failing"] is not None:
        ax.axvline(cap["first_failing"], color=color, alpha=0.6, linewidth=1.5,  # type: ignore[attr-defined]
                   linestyle=":", label=f"{name} fails at {cap['first_failing']}")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


LEVEL_COLUMNS = (
    ("users", None), ("requests", "requests"), ("failed", "failed"),
    ("TTFT p50 ms", "median_ttft_ms"), ("TTFT p95", "p95_ttft_ms"),
    ("TPOT p50 ms", "median_tpot_ms"), ("TPOT p95", "p95_tpot_ms"), ("ITL p50 ms", "median_itl_ms"),
    ("e2e p50 ms", "median_e2el_ms"), ("e2e p95", "p95_e2el_ms"), ("e2e p99", "p99_e2el_ms"),
    ("out tok/s", "output_throughput"), ("req/s", "request_throughput"), ("goodput req/s", "request_goodput"),
    ("SLO met %", "slo_attainment"), ("mean out tokens", "mean_output_tokens"),
)


def level_rows(summary: dict) -> list[list[str]]:
    rows = []
    marks = knee_marks(summary)
    for c, s in summary["levels"].items():
        row = [c + marks.get(c, "").replace("  <-", " ←")]
        for _, key in LEVEL_COLUMNS[1:]:
            value = s[key]
            if key == "slo_attainment":
                row.append(f"{100 * value:.0f}")
            elif isinstance(value, int):
                row.append(str(value))
            else:
                row.append(_fmt(value, 2 if key in ("request_throughput", "request_goodput") else 1))
        rows.append(row)
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


HTML_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;margin:1em 0}"
              "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top}"
              "td.text{text-align:left;white-space:pre-wrap;max-width:40em} img{max-width:100%}")


def slo_text(slo: dict) -> str:
    return (f"TTFT ≤ {slo['ttft_ms']:g} ms and TPOT ≤ {slo['tpot_ms']:g} ms for ≥ {100 * slo['attainment']:g}% "
            "of requests")


def write_report(run_dir: Path, summary: dict, command: str = "") -> None:
    """summary.json, report.md, report.html and the plots for one system's run."""
    slo = Slo(**summary["slo"])
    plots = plot({summary["target"]: summary}, run_dir, slo)
    (run_dir / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    header = [h for h, _ in LEVEL_COLUMNS]
    rows = level_rows(summary)
    locust = sorted(p.name for p in run_dir.glob("locust*"))
    lines = [f"# Load test: {summary['target']}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"SLO: {slo_text(summary['slo'])}.", "", "## Capacity", "", summary["capacity"]["line"], "",
              markdown_table(header, rows), "",
              f"Prompt tokens (templated): {summary['prompt_tokens']}. Latencies in ms; users = concurrent "
              "closed-loop users when each request started.", ""]
    lines += [f"![{p}]({p})" for p in plots]
    if locust:
        lines += ["", "Locust's own files: " + ", ".join(locust)]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    body = [f"<h1>Load test: {html.escape(summary['target'])}</h1>"]
    if command:
        body.append(f"<p>Command: <code>{html.escape(command)}</code></p>")
    body += [f"<p>SLO: {html.escape(slo_text(summary['slo']))}.</p>",
             f"<h2>Capacity</h2><p>{html.escape(summary['capacity']['line'])}</p>", html_table(header, rows)]
    body += [f'<p><img src="{p}" alt="{p}"></p>' for p in plots]
    if locust:
        body.append("<p>Locust's own files: " + ", ".join(f'<a href="{p}">{p}</a>' for p in locust) + "</p>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>WiNGPT2 load test</title>" \
           f"<style>{HTML_STYLE}</style></head><body>{''.join(body)}</body></html>"
    (run_dir / "report.html").write_text(page, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="directory holding requests.jsonl")
    p.add_argument("--label", default="", help="system name (default: the records' target)")
    Slo.add_flags(p)
    p.add_argument("--patients", type=int, default=500)
    p.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE,
                   help="the chart profile the replica plan is for (GPUs per replica, PodDisruptionBudget)")
    p.add_argument("--command", default="", help="the command that made the run, shown in the report")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    run_dir = Path(args.run_dir)
    try:
        slo = Slo.from_args(args)
        records = load_records(run_dir / "requests.jsonl")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not records:
        print(f"error: {run_dir / 'requests.jsonl'} holds no requests", file=sys.stderr)
        return 2
    summary = system_summary(args.label or records[0].target, records, slo, args.patients, args.profile)
    write_report(run_dir, summary, args.command)
    print(summary["capacity"]["line"])
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
