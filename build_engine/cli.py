"""`python -m build_engine`: checkpoint -> TensorRT-LLM engine -> Triton model repository.

With DRY_RUN=1 (or --dry-run) it prints every command and every file it would write and runs
nothing, so it works without a GPU; that output is what the tests check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import TextIO

from build_engine import calibration, pins
from build_engine.commands import Step, format_command, steps
from build_engine.errors import ConfigError
from build_engine.settings import Build, BuildSettings, resolve

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> dict[str, object]:
    """One `--flag` per settings field; unset flags stay None so the environment can fill them."""
    p = argparse.ArgumentParser(prog="python -m build_engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(BuildSettings):
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{f.metadata['help']} [env {f.metadata['env']}, default {f.default!r}]"
        if f.type == "bool":
            p.add_argument(flag, action="store_const", const=True, default=None, help=help_)
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(str(f.type), str), default=None, help=help_)
    return vars(p.parse_args(argv))


def manifest(b: Build, plan: list[Step], calib: dict[str, object] | None) -> str:
    """build.json: what was built, from what, with which release -- kept next to the engine."""
    return json.dumps({
        "engine": b.name,
        "tensorrt_llm": pins.TRTLLM_VERSION, "tensorrt_llm_commit": pins.TRTLLM_TAG_COMMIT,
        "container": pins.TRITON_CONTAINER,
        "model": b.checkpoint.spec.name, "quant": b.quant, "awq_block_size": b.awq_block_size,
        "kv_cache": b.settings.kv_cache, "tp": b.tp, "max_batch_size": b.settings.max_batch_size,
        "max_seq_len": b.max_seq_len, "max_input_len": b.max_input_len, "max_num_tokens": b.max_num_tokens,
        "calibration": calib,
        "settings": asdict(b.settings),
        "steps": [list(s.argv) for s in plan],
    }, ensure_ascii=False, indent=2) + "\n"


def prepare(b: Build) -> tuple[str | None, dict[str, object] | None, int]:
    """The staged calibration file (text), its description, and the sample count quantize.py gets."""
    if not b.needs_calibration:
        return None, None, 0
    s = b.settings
    # quantize.py uses only the first 32 samples for AWQ: pack into no more, or prompts would be dropped.
    samples = min(s.calib_samples, pins.AWQ_CALIB_SIZE_CAP) if b.awq_block_size else s.calib_samples
    prompts = calibration.load_prompts(s.calib_jsonl, minimum=samples)
    packed = calibration.pack(prompts, samples)
    staged = calibration.staged_jsonl(packed)
    info = {"source": str(s.calib_jsonl), "prompts": len(prompts), "samples": len(packed),
            "staged": str(b.calib_dir / calibration.STAGED_FILE), "sha256": calibration.digest(staged)}
    return staged, info, len(packed)


def dry_run(b: Build, out: TextIO) -> None:
    staged, info, samples = prepare(b)
    plan = steps(b, samples)
    out.write("# build_engine DRY RUN: prints what would run and be written; runs nothing, needs no GPU\n")
    out.write(f"# TensorRT-LLM {pins.TRTLLM_VERSION} in {pins.TRITON_CONTAINER}\n")
    out.write(f"# engine directory: {b.root}\n")
    if b.warning:
        out.write(f"# {b.warning}\n")
    if staged is not None and info is not None:
        first = staged.splitlines()[0]
        out.write(f"\n## file {info['staged']}: {info['samples']} samples packed from {info['prompts']} prompts "
                  f"of {info['source']} (sha256 {info['sha256']}); first sample:\n{first}\n")
    out.write(f"\n## file {b.root / 'build.json'}\n{manifest(b, plan, info)}")
    for number, step in enumerate(plan, start=1):
        out.write(f"\n## step {number}/{len(plan)}: {step.title} -- {step.why}\n{format_command(step.argv)}\n")


def run(b: Build, out: TextIO) -> int:
    """Write the calibration set and manifest, then run each step, stopping at the first failure."""
    staged, info, samples = prepare(b)
    plan = steps(b, samples)
    _preflight(b, plan)
    b.root.mkdir(parents=True, exist_ok=True)
    if staged is not None:
        b.calib_dir.mkdir(exist_ok=True)
        (b.calib_dir / calibration.STAGED_FILE).write_text(staged, encoding="utf-8")
    (b.root / "build.json").write_text(manifest(b, plan, info), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    for number, step in enumerate(plan, start=1):
        out.write(f"## step {number}/{len(plan)}: {step.title}\n{format_command(step.argv)}\n")
        out.flush()
        code = subprocess.run(step.argv, env=env, check=False).returncode
        if code:
            out.write(f"build_engine: step {number} ({step.title}) failed with exit code {code}\n")
            return code
    out.write(f"engine: {b.engine_dir}\nmodel repository: {b.repo_dir}\n")
    return 0


def _preflight(b: Build, plan: list[Step]) -> None:
    """Fail before any GPU work if the tools of the pinned release are missing or the engine exists."""
    script = Path(plan[0].argv[1])
    if not script.is_file():
        raise ConfigError(f"{script} not found: run inside {pins.TRITON_CONTAINER}, or clone TensorRT-LLM "
                          f"v{pins.TRTLLM_VERSION} and set TRTLLM_EXAMPLES to its examples/ directory")
    if not (REPO_ROOT / "serving").is_dir():
        raise ConfigError(f"{REPO_ROOT / 'serving'} is missing: the last step renders the model repository with it")
    if shutil.which("trtllm-build") is None:
        raise ConfigError(f"trtllm-build is not on PATH: run inside {pins.TRITON_CONTAINER}")
    if (b.engine_dir / "config.json").exists() and not b.settings.force:
        raise ConfigError(f"{b.engine_dir} already holds an engine; remove it or pass --force (ENGINE_FORCE=1)")


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    try:
        build = resolve(BuildSettings.from_sources(parse_args(argv)))
        if build.settings.dry_run:
            dry_run(build, out)
            return 0
        return run(build, out)
    except ConfigError as exc:
        print(f"build_engine: error: {exc}", file=sys.stderr)
        return 2
